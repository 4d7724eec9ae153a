// The undici Agent of direct connections. undici's own destroy() leaves a connection it is still
// opening (its TCP connect or TLS handshake) to run on until the connect timeout: the Client it
// belongs to fails its requests but does not cancel the attempt. A TLS origin that accepts and
// never answers the handshake then kept its socket open, and the connect timer the process
// alive, for up to `connectTimeout` (10 s by default) after the layer's scope had closed.
import { Socket } from "node:net"
import type { Duplex } from "node:stream"
import * as Undici from "@effect/platform-node/Undici"

/**
 * An Agent whose destruction also ends the connections it is still opening. Its connector is the
 * one undici's pools build from the same options (see `connectorOptions`), so connections are
 * made exactly as before; one for the agent rather than one per origin's pool, so its TLS
 * sessions (kept by server name, `maxCachedSessions` of them) outlive a pool undici drops once
 * its connections close: an origin met again resumes its session (measured: with a connector per
 * pool, none did).
 */
export class DirectAgent extends Undici.Agent {
  readonly opening: Set<Socket>
  constructor(options: Undici.Agent.Options) {
    const opening = new Set<Socket>()
    const { connect } = options
    super({
      ...options,
      connect: tracked(
        typeof connect === "function" ? connect : Undici.buildConnector(connectorOptions(options)),
        opening
      )
    })
    this.opening = opening
  }

  override destroy(): Promise<void>
  override destroy(err: Error | null): Promise<void>
  override destroy(callback: () => void): void
  override destroy(err: Error | null, callback: () => void): void
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    endOpening(this.opening)
    return destroyAs(super.destroy.bind(this), a, b)
  }
}

/**
 * What undici's Pool (and Client) build their connector from: its TLS options (`connect`, and
 * the legacy `tls`) and the pool options that shape a connection (`socketPath`,
 * `maxCachedSessions`, `autoSelectFamily`, `useH2c`...), in the same order, `connect` last.
 */
const connectorOptions = (options: Undici.Agent.Options): Undici.buildConnector.BuildOptions => {
  const { connect, connectTimeout, allowH2, socketPath, maxCachedSessions } = options
  const { autoSelectFamily, autoSelectFamilyAttemptTimeout } = options
  // Taken by undici's pools, left out of the Agent's type declarations.
  const { tls, useH2c } = options as { readonly tls?: object | null; readonly useH2c?: boolean | null }
  return {
    ...tls,
    ...(maxCachedSessions == null ? {} : { maxCachedSessions }),
    ...(allowH2 == null ? {} : { allowH2 }),
    ...(useH2c == null ? {} : { useH2c }),
    ...(socketPath == null ? {} : { socketPath }),
    ...(connectTimeout == null ? {} : { timeout: connectTimeout }),
    ...(typeof autoSelectFamily === "boolean"
      ? {
          autoSelectFamily,
          ...(autoSelectFamilyAttemptTimeout == null ? {} : { autoSelectFamilyAttemptTimeout })
        }
      : {}),
    ...(connect as Partial<Undici.buildConnector.BuildOptions> | undefined)
  }
}

/**
 * Ends sockets an agent is still opening, with an error: the connector's 'error' listener clears
 * its connect timer and calls back, which a plain destroy() (a 'close' only) would not.
 */
export const endOpening = (sockets: Set<Duplex>): void => {
  for (const socket of sockets) socket.destroy(new Undici.errors.ClientDestroyedError())
  sockets.clear()
}

type Destroy = {
  (err: Error | null): Promise<void>
  (callback: () => void): void
  (err: Error | null, callback: () => void): void
}

/** An agent's `destroy(a, b)` passed on to `destroy` as given: undici's promise form calls back into it. */
export const destroyAs = (
  destroy: Destroy,
  a: Error | null | (() => void) | undefined,
  b: (() => void) | undefined
): Promise<void> | void => {
  if (typeof a === "function") return destroy(a)
  if (b !== undefined) return destroy(a ?? null, b)
  return destroy(a ?? null)
}

/** `connect`, keeping each socket it returns in `opening` until it calls back. */
export const tracked =
  (connect: Undici.buildConnector.connector, opening: Set<Socket>): Undici.buildConnector.connector =>
  (options, callback) => {
    let done = false
    // Declared first: a connector of the caller's may call back before it returns.
    let socket: unknown
    socket = connect(options, (error, connected) => {
      done = true
      if (socket instanceof Socket) opening.delete(socket)
      if (error === null) callback(null, connected!)
      else callback(error, null)
    })
    if (!done && socket instanceof Socket) opening.add(socket)
    // Returned as undici's connectors return it: undici cancels an attempt through it.
    return socket
  }
