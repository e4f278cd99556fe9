// The AWS CLI and boto3 as users run them against the local endpoint (Debian's awscli and
// python3-boto3, by absolute path: a pyenv `aws`/`python3` may shadow them on PATH).
import { execFile } from 'node:child_process'

export const AWS = '/usr/bin/aws'
export const PYTHON = '/usr/bin/python3'

/** The environment of a user with the given keys and no ~/.aws files. */
export const clientEnv = (keys: { id: string; secret: string } = { id: 'x', secret: 'x' }) => ({
  PATH: process.env['PATH'] ?? '/usr/bin:/bin',
  HOME: process.env['HOME'] ?? '/tmp',
  AWS_ACCESS_KEY_ID: keys.id,
  AWS_SECRET_ACCESS_KEY: keys.secret,
  AWS_REGION: 'us-east-1',
  AWS_DEFAULT_REGION: 'us-east-1',
  AWS_CONFIG_FILE: '/dev/null',
  AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
  AWS_PAGER: '',
  AWS_MAX_ATTEMPTS: '1',
  AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
})

export function run(
  file: string,
  args: string[],
  env: Record<string, string> = clientEnv(),
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { env, timeout: 60_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0
      resolve({ code, stdout, stderr })
    })
  })
}

/** Runs a Python program with boto3 (`python3 -c`), arguments in sys.argv[1:]. */
export const python = (program: string, args: string[], env?: Record<string, string>) =>
  run(PYTHON, ['-c', program, ...args], env)
