#!/usr/bin/env node
// Entry point of the `fleetsim` command. fleetsim is written in TypeScript and runs from source: the
// first start after a change bundles the sources into node_modules/.cache/fleetsim (esbuild, a few
// seconds), and every start after it loads that bundle; where no bundle can be built, tsx compiles
// each module on first load (src/runtime/bundle.mjs says why and how).
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { bundleForStart } from '../runtime/bundle.mjs'

// The SDK warns on every start that its 2027 releases will need Node.js 22; fleetsim pins its SDK
// version in package-lock.json, so the warning is noise for our users.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'

const bundle = await bundleForStart()
let main
if (bundle) {
  // Threads and child processes start from the same bundle (bundledEntry).
  process.env.FLEETSIM_BUNDLE = bundle
  // Stack traces name the TypeScript sources, as under tsx.
  process.setSourceMapsEnabled(true)
  ;({ main } = await import(pathToFileURL(join(bundle, 'src/cli/main.mjs')).href))
} else {
  delete process.env.FLEETSIM_BUNDLE
  const { register } = await import('tsx/esm/api')
  register()
  ;({ main } = await import('./main.ts'))
}
process.exitCode = await main(process.argv.slice(2))
