import { ConfigError } from '../errors.ts'

/**
 * Checks of the inputs of `fleetsim k8s` that Kubernetes would otherwise reject only at
 * `kubectl apply`, or accept and then fail at run time. Each error names the flag, the value and the fix.
 */

/** Kubernetes names of most objects, and namespaces: DNS-1123 labels of at most 63 characters (RFC 1123). */
export const DNS_LABEL_MAX = 63

/**
 * The longest `--name`: `<name>-coordinator` names a Service, which must be a DNS-1035 label of at
 * most 63 characters (Kubernetes API conventions, "identifiers"), and 12 characters go to `-coordinator`.
 */
export const NAME_MAX = DNS_LABEL_MAX - '-coordinator'.length

const DNS_1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/
const DNS_1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/

/**
 * Checks the run's name (`--name`): it starts the names of every object, and of a Service, so it is a
 * DNS-1035 label (lowercase letters, digits, '-'; starts with a letter) of at most {@link NAME_MAX}.
 *
 * @example checkName('mixed-10k', '--name') // 'mixed-10k'
 */
export function checkName(value: string, where: string): string {
  if (value.length === 0 || value.length > NAME_MAX || !DNS_1035_LABEL.test(value)) {
    const suggestion = suggestLabel(value)
    throw new ConfigError(
      'FLEETSIM_BAD_K8S_NAME',
      `${where} '${value}' is not a valid name: expected lowercase letters, digits and '-', starting with a letter and ending with a letter or digit, at most ${NAME_MAX} characters (it becomes the Service name <name>-coordinator)` +
        (suggestion ? `; e.g. --name ${suggestion}` : ''),
    )
  }
  return value
}

/** Checks `--namespace`: a DNS-1123 label of at most 63 characters. */
export function checkNamespace(value: string): string {
  if (value.length > DNS_LABEL_MAX || !DNS_1123_LABEL.test(value)) {
    const suggestion = suggestLabel(value)
    throw new ConfigError(
      'FLEETSIM_BAD_K8S_NAME',
      `--namespace '${value}' is not a valid namespace: expected lowercase letters, digits and '-', starting and ending with a letter or digit, at most ${DNS_LABEL_MAX} characters` +
        (suggestion ? `; e.g. --namespace ${suggestion}` : ''),
    )
  }
  return value
}

/** A name made valid, to suggest in an error: lowercase, runs of other characters as '-'. */
export function suggestLabel(value: string): string | undefined {
  const s = value
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^[^a-z]+/, '')
    .slice(0, NAME_MAX)
    .replace(/-+$/, '')
  return s.length > 0 ? s : undefined
}

// The grammar of an image reference, as the container runtimes parse it
// (github.com/distribution/reference, regexp.go): [domain[:port]/]path[:tag][@digest].
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])'
const DOMAIN = `(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[0-9a-fA-F:]+\\])(?::[0-9]+)?`
const PATH_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*'
const TAG = '[\\w][\\w.-]{0,127}'
const DIGEST = '[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}'
const IMAGE_REFERENCE = new RegExp(
  `^((?:${DOMAIN}/)?${PATH_COMPONENT}(?:/${PATH_COMPONENT})*)(?::(${TAG}))?(?:@(${DIGEST}))?$`,
)
/** distribution/reference: "repository name must not be more than 255 characters". */
const IMAGE_NAME_MAX = 255

/**
 * Checks `--image` against the image reference grammar; returns whether it is pinned (a tag other
 * than `latest`, or a digest), so that the caller can warn that pods on different nodes might
 * otherwise run different versions.
 *
 * @example checkImage('ghcr.io/acme/fleetsim:0.1.0') // { pinned: true }
 */
export function checkImage(value: string): { pinned: boolean } {
  const m = IMAGE_REFERENCE.exec(value)
  if (!m || m[1]!.length > IMAGE_NAME_MAX) {
    const hint = value !== value.toLowerCase() ? ' (the repository path must be lowercase)' : ''
    throw new ConfigError(
      'FLEETSIM_BAD_IMAGE',
      `--image '${value}' is not an image reference${hint}: expected [registry[:port]/]path[:tag][@sha256:digest], e.g. ghcr.io/acme/fleetsim:0.1.0, built from this repository's Dockerfile`,
    )
  }
  return { pinned: m[3] !== undefined || (m[2] !== undefined && m[2] !== 'latest') }
}

/** Hosts that, inside a pod, are the pod itself rather than the machine that ran `fleetsim k8s`. */
const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[?::1\]?|0\.0\.0\.0)$/i

/**
 * Rejects a URL whose host is loopback: inside a pod that is the pod itself.
 *
 * @example checkReachableFromPods('mqtt://emqx.messaging:1883', '--broker') // passes
 */
export function checkReachableFromPods(url: string, where: string, example: string): void {
  let host: string
  try {
    host = new URL(url).hostname
  } catch {
    throw new ConfigError('FLEETSIM_BAD_URL', `${where} '${url}' is not a URL; e.g. ${example}`)
  }
  if (LOOPBACK.test(host)) {
    throw new ConfigError(
      'FLEETSIM_BAD_URL',
      `${where} '${url}' points at ${host}, which inside a pod is the pod itself; give an address the pods can reach, e.g. ${example} (a Service name)`,
    )
  }
}
