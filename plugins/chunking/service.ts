/** What the chunking plugin publishes for other plugins (the 8bitmime plugin reads it). */

export interface ChunkingService {
  /** BODY=BINARYMIME may be accepted: BDAT can carry binary MIME (RFC 3030 section 3). */
  readonly binaryMime: boolean;
}

declare module '../../core/plugin.ts' {
  interface Services {
    chunking: ChunkingService;
  }
}
