// Types of bundle.mjs (plain JavaScript, so that bin.js can load it before tsx).
export declare const ROOT: string
export declare const ENTRIES: readonly string[]
export declare function cacheDir(root?: string): string
export declare function sourceStamp(root?: string): string
export declare function buildBundle(o?: { root?: string; stamp?: string }): Promise<string>
export declare function builtBundle(root?: string, stamp?: string): string | undefined
export declare function bundleForStart(): Promise<string | undefined>
export declare function bundledEntry(entry: URL): URL | undefined
