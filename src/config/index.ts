export {
  type FleetMixEntry,
  loadScenarioFile,
  type RunConfig,
  resolveRunConfig,
  resolveVerifyConfig,
  type ScenarioFile,
  type VerifyConfig,
} from './resolve.ts'
export { type Field, SCENARIO_SCHEMA, scenarioJsonSchema } from './schema.ts'
