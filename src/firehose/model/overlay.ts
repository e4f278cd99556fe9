// Members and constraints added to the Firehose model after the botocore copy that shapes.json was
// generated from (Debian's python3-botocore, model of 2022-12), transcribed from the API reference
// (https://docs.aws.amazon.com/firehose/latest/APIReference/, read 2026). Applied on top of
// shapes.json by model/index.ts: a new model release is a regenerated shapes.json plus whatever is
// still missing here.
import type { Shape } from './index.ts'

/** Whole shapes (new ones replace nothing; existing ones are merged key by key). */
export const SHAPES: Record<string, Partial<Shape>> = {
  // API_ExtendedS3DestinationConfiguration (current reference; the 2022 model had only `arn:.*`).
  RoleARN: { pattern: 'arn:.*:iam::\\d{12}:role/[a-zA-Z_0-9+=,.@\\-_/]+' },
  BucketARN: { pattern: 'arn:.*:s3:::[\\w\\.\\-]{1,255}' },
  // API_BufferingHints: IntervalInSeconds 0..900 since the zero-buffering launch (2023-12).
  IntervalInSeconds: { min: 0 },
  // API_CreateDeliveryStream: DeliveryStreamType.
  DeliveryStreamType: { enum: ['DirectPut', 'KinesisStreamAsSource', 'MSKAsSource', 'DatabaseAsSource'] },
  // API_Processor, API_ProcessorParameter.
  ProcessorType: {
    enum: [
      'RecordDeAggregation',
      'Decompression',
      'CloudWatchLogProcessing',
      'Lambda',
      'MetadataExtraction',
      'AppendDelimiterToRecord',
    ],
  },
  ProcessorParameterName: {
    enum: [
      'LambdaArn',
      'NumberOfRetries',
      'MetadataExtractionQuery',
      'JsonParsingEngine',
      'RoleArn',
      'BufferSizeInMBs',
      'BufferIntervalInSeconds',
      'SubRecordType',
      'Delimiter',
      'CompressionFormat',
      'DataMessageExtraction',
    ],
  },
  // API_ExtendedS3DestinationConfiguration: FileExtension, CustomTimeZone.
  FileExtension: { type: 'string', min: 0, max: 128, pattern: "^$|\\.[0-9a-z!\\-_.*'()]+" },
  CustomTimeZone: { type: 'string', min: 0, max: 50, pattern: '^$|[a-zA-Z/_]+' },
  // API_DirectPutSourceConfiguration.
  DirectPutSourceConfiguration: {
    type: 'structure',
    required: ['ThroughputHintInMBs'],
    members: { ThroughputHintInMBs: 'ThroughputHintInMBs' },
  },
  ThroughputHintInMBs: { type: 'integer', min: 1, max: 100 },
  /** Configurations of sources and destinations the local endpoint refuses by name: not walked. */
  OpaqueStructure: { type: 'structure', members: {} },
}

/** Members added to existing structures: structure → member → shape. */
export const MEMBERS: Record<string, Record<string, string>> = {
  ExtendedS3DestinationConfiguration: { FileExtension: 'FileExtension', CustomTimeZone: 'CustomTimeZone' },
  ExtendedS3DestinationUpdate: { FileExtension: 'FileExtension', CustomTimeZone: 'CustomTimeZone' },
  CreateDeliveryStreamInput: {
    DirectPutSourceConfiguration: 'DirectPutSourceConfiguration',
    MSKSourceConfiguration: 'OpaqueStructure',
    SnowflakeDestinationConfiguration: 'OpaqueStructure',
    IcebergDestinationConfiguration: 'OpaqueStructure',
    DatabaseSourceConfiguration: 'OpaqueStructure',
  },
  UpdateDestinationInput: {
    SnowflakeDestinationUpdate: 'OpaqueStructure',
    IcebergDestinationUpdate: 'OpaqueStructure',
  },
}
