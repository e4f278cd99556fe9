// jq-web ships no types: a promise of the Emscripten build of jq (jq.wasm beside jq.js).
declare module 'jq-web' {
  interface Jq {
    /** Runs jq on the JSON text `input`; returns jq's stdout; throws on a non-zero exit. */
    raw(input: string, filter: string, flags?: string[]): string
    json(input: unknown, filter: string): unknown
  }
  const jq: Promise<Jq>
  export default jq
}
