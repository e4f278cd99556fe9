// Entry point of one benchmark suite's own process, forked by run.ts. Like src/cli/bin.js it runs
// the TypeScript sources through tsx; the work is in child.ts.
import { register } from 'tsx/esm/api'

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
register()
await import('./child.ts')
