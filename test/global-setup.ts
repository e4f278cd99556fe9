// Before any test: the bundle of the sources as they are (src/runtime/bundle.mjs), built once here
// rather than by the first CLIs the tests start, several at once.
import { bundleForStart } from '../src/runtime/bundle.mjs'

export default async function setup(): Promise<void> {
  await bundleForStart()
}
