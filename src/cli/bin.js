#!/usr/bin/env node
// Entry point of the `fleetsim` command. fleetsim is written in TypeScript and runs from source:
// tsx compiles each module on first load (cached), so no build step stands between a change and a run.
import { register } from 'tsx/esm/api'

// The SDK warns on every start that its 2027 releases will need Node.js 22; fleetsim pins its SDK
// version in package-lock.json, so the warning is noise for our users.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
register()
const { main } = await import('./main.ts')
process.exitCode = await main(process.argv.slice(2))
