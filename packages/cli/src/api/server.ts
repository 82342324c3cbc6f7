import { METHODS as HTTP_METHODS } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CairnError } from '@cairn/core';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { ApiContext } from './api-context.js';
import { bearerCheck, localClientCheck, type ListenAddress } from './auth.js';
import type { TlsFiles } from './tls.js';
import { errorResponse, forOperator, HttpError } from './errors.js';
import { ClientErrors } from './client-error.js';
import { ConnectionLimit, DEFAULT_MAX_CONNECTIONS } from './connection-limit.js';
import { HandlersInFlight } from './handlers-in-flight.js';
import { registerBackupRoutes } from './routes-backups.js';
import { registerJobRoutes } from './routes-jobs.js';
import { DEFAULT_TIMEOUTS, longestWaitMs, type ApiServerTimeouts } from './server-timeouts.js';
import { registerSystemRoutes } from './routes-system.js';
import { registerTargetRoutes } from './routes-targets.js';
import { registerVolumeRoutes } from './routes-volumes.js';
import { parseJsonBody } from './json-body.js';
import { withoutFragment } from './request-target.js';

/** Largest request body accepted (bytes). Every body of the API is a small JSON document. */
export const BODY_LIMIT = 1024 * 1024;

/**
 * Longest path segment the router matches as a parameter (characters). As long as any request
 * line Node accepts (16 KiB of headers), so that the route, not the router, judges an id: a
 * volume may have a long name, and an id that cannot exist is NOT_FOUND (see pathId).
 */
export const MAX_PARAM_LENGTH = 16 * 1024;

export interface ApiServerOptions {
  /** When set, every request needs `Authorization: Bearer <token>`. */
  token?: string;
  /** When set, the server speaks HTTPS with this PEM certificate (chain) and key (see api/tls.ts). */
  tls?: TlsFiles;
  /** One line per request (method, path, status, time); never headers, so never the token. */
  log?: (line: string) => void;
  /** Errors answered with a 5xx, for the operator (the client gets the error body). */
  onServerError?: (err: unknown) => void;
  /** Connection limits; each defaults to DEFAULT_TIMEOUTS. */
  timeouts?: Partial<ApiServerTimeouts>;
  /** Connections held open at once; one more is closed at once (ConnectionLimit). Default DEFAULT_MAX_CONNECTIONS. */
  maxConnections?: number;
}

/**
 * Every method a request can reach the router with: all that Node's parser reads (TRACE, QUERY,
 * PROPFIND… too), except CONNECT, which Node hands to its own event and never to the router. A
 * known path answers each one it does not serve 405 (addMethodNotAllowed), never 404. The common
 * ones first: `Allow` lists the served ones in this order (`GET, HEAD, DELETE`).
 */
const COMMON_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'];
const METHODS: readonly string[] = [...COMMON_METHODS, ...HTTP_METHODS.filter((m) => m !== 'CONNECT' && !COMMON_METHODS.includes(m))];

/**
 * The REST API (docs/api.md) over one ApiContext. `listen` binds; `shutdown` stops accepting
 * requests (later ones get 503 UNAVAILABLE), cancels every running job, waits for the requests
 * in flight, for their route handlers to end and for the jobs to settle. Closing the context
 * (targets, worker threads) is the caller's, after `shutdown`: nothing of the server uses it then.
 */
export class ApiServer {
  readonly app: FastifyInstance;
  private closing = false;
  private readonly scheme: 'http' | 'https';
  private readonly timeouts: ApiServerTimeouts;
  private readonly handlers = new HandlersInFlight();

  constructor(
    private readonly api: ApiContext,
    options: ApiServerOptions = {},
  ) {
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
    this.app = buildApp(api, options, this.timeouts, () => this.closing, this.handlers);
    this.scheme = options.tls ? 'https' : 'http';
  }

  /** Binds `address` (port 0: a free port) and resolves with the address actually bound and its URL. */
  async listen(address: ListenAddress): Promise<{ host: string; port: number; url: string }> {
    try {
      await this.app.listen({ host: address.host, port: address.port });
    } catch (err) {
      throw listenError(address, err);
    }
    const bound = this.app.server.address() as AddressInfo;
    const host = bound.address;
    return { host, port: bound.port, url: `${this.scheme}://${host.includes(':') ? `[${host}]` : host}:${bound.port}` };
  }

  /**
   * Graceful stop (call once): resolves when every job has ended, every connection is closed and
   * every route handler has ended. Requests in flight get `drainTimeoutMs` after the jobs settled
   * to be answered; connections still open then (a client that never finishes sending its body,
   * say) are closed. A handler goes on working after its connection is closed (a delete, an
   * import-record: its catalog writes are not stopped halfway), and the stop waits for it too, so
   * the stop takes the jobs' settling plus `drainTimeoutMs`, or as long as the slowest handler
   * when that is longer. A handler is not cancelled: it ends as its store calls do (the store's
   * own timeouts), and it waits for a record section another process holds as long as that holds
   * it.
   */
  async shutdown(): Promise<void> {
    this.closing = true;
    const closed = this.app.close();
    await this.api.jobs.shutdown();
    this.app.server.closeIdleConnections();
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([closed.then(() => true), new Promise<false>((r) => (timer = setTimeout(() => r(false), this.timeouts.drainTimeoutMs)))]);
    clearTimeout(timer);
    if (!drained) this.app.server.closeAllConnections();
    await closed;
    // No connection is left, but a handler whose connection was cut may still be at work on the
    // targets; none starts from here on.
    await this.handlers.close();
    // A start that was in flight added its job after the first wait (cancelled at once): wait for it too.
    await this.api.jobs.settled();
  }
}

function buildApp(api: ApiContext, options: ApiServerOptions, timeouts: ApiServerTimeouts, closing: () => boolean, handlers: HandlersInFlight): FastifyInstance {
  // Node checks request and header timeouts every connectionsCheckingInterval (default 30 s).
  const checking = { connectionsCheckingInterval: Math.max(100, Math.min(1000, timeouts.requestTimeoutMs)) };
  // The error that refuses `request` (no hooks run before routing): without the token, or, on a
  // server without one, when a web page made it (localClientCheck).
  const check = options.token === undefined ? localClientCheck() : bearerCheck(options.token);
  const authenticated = (request: FastifyRequest): unknown => {
    try {
      check(request);
      return undefined;
    } catch (err) {
      return err;
    }
  };
  const clientErrors = new ClientErrors();
  const app = Fastify({
    ...(options.tls ? { https: { cert: options.tls.cert, key: options.tls.key, ...checking } } : { http: checking }),
    requestTimeout: timeouts.requestTimeoutMs,
    connectionTimeout: timeouts.connectionTimeoutMs,
    keepAliveTimeout: timeouts.keepAliveTimeoutMs,
    logger: false,
    bodyLimit: BODY_LIMIT,
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // A `#fragment` (which clients do not send) is dropped before routing: it is not the query.
    rewriteUrl: (request) => withoutFragment(request.url ?? '/'),
    // Errors fastify raises before routing (a URL that cannot be decoded) get the API's shape too,
    // and, like every request, are answered only once authenticated: without the token, 401.
    frameworkErrors: (err, request, reply) => sendError(reply, authenticated(request) ?? err, options),
    // And so do requests Node's HTTP parser refuses (timeout, headers too large, not HTTP), once
    // the answers owed before them on the connection are sent (ClientErrors).
    clientErrorHandler: clientErrors.handle,
  });
  clientErrors.install(app.server);

  // Bodies are JSON only (text/plain is refused with 415); an empty JSON body is "no body". Keys
  // are data (parseJsonBody): `__proto__` or `constructor` is a key like any other.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, async (_request: FastifyRequest, body: string | Buffer) => (body === '' ? undefined : parseJsonBody(String(body))));

  app.addHook('onRequest', async (request) => check(request));
  app.addHook('onRequest', async () => {
    if (closing()) throw new CairnError('UNAVAILABLE', 'the server is shutting down');
  });
  // Once shutting down, every answer (to a request in flight, or the 503 above) closes its
  // connection, so no keep-alive connection holds the server open.
  app.addHook('onSend', async (_request, reply) => {
    if (closing()) reply.header('connection', 'close');
  });
  if (options.log) {
    const log = options.log;
    app.addHook('onResponse', async (request, reply) => log(`${request.method} ${request.url} ${reply.statusCode} ${Math.round(reply.elapsedTime)}ms`));
  }

  app.setErrorHandler((err, _request, reply) => sendError(reply, err, options));
  app.setNotFoundHandler((request, reply) => sendError(reply, new CairnError('NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`), options));

  // Fastify routes only the methods it knows (GET … OPTIONS, TRACE, QUERY): the others get a
  // route too, for their 405.
  for (const m of METHODS) if (!app.supportedMethods.includes(m)) app.addHttpMethod(m);
  countHandlers(app, handlers);
  const routes = collectRoutes(app);
  const connections = new ConnectionLimit(app.server, options.maxConnections ?? DEFAULT_MAX_CONNECTIONS, options.log);
  registerSystemRoutes(app, api, () => connections.stats());
  registerVolumeRoutes(app, api);
  registerBackupRoutes(app, api);
  registerJobRoutes(app, api, longestWaitMs(timeouts));
  registerTargetRoutes(app, api);
  addMethodNotAllowed(app, routes);
  // Headers must arrive within the request timeout too (Node's default is 60 s).
  app.server.headersTimeout = Math.min(app.server.headersTimeout, timeouts.requestTimeoutMs);
  return app;
}

function sendError(reply: FastifyReply, err: unknown, options: ApiServerOptions): FastifyReply {
  const r = errorResponse(err);
  if (forOperator(err, r.status)) options.onServerError?.(err);
  return reply.code(r.status).headers(r.headers).send(r.body);
}

/** Runs the handler of every route added from here on counted by `handlers` (shutdown waits for them). */
function countHandlers(app: FastifyInstance, handlers: HandlersInFlight): void {
  app.addHook('onRoute', (route) => {
    const handler = route.handler;
    route.handler = function (this: FastifyInstance, request, reply) {
      return handlers.run(async () => handler.call(this, request, reply));
    };
  });
}

/** Records the methods of every route as it is added (the fillers of addMethodNotAllowed excepted). */
function collectRoutes(app: FastifyInstance): Map<string, Set<string>> {
  const routes = new Map<string, Set<string>>();
  app.addHook('onRoute', (route) => {
    if ((route.config as { filler?: boolean } | undefined)?.filler) return;
    const methods = routes.get(route.url) ?? new Set<string>();
    for (const m of [route.method].flat()) methods.add(m);
    routes.set(route.url, methods);
  });
  return routes;
}

/**
 * On every path, the methods it does not serve (any of METHODS) answer 405 METHOD_NOT_ALLOWED
 * with `Allow`, once authenticated and before the body is read: whatever the body (another
 * content type, malformed, too large), the answer is the 405.
 */
function addMethodNotAllowed(app: FastifyInstance, routes: Map<string, Set<string>>): void {
  for (const [url, methods] of [...routes]) {
    // Fastify answers HEAD on every GET route by itself.
    const serves = (m: string) => methods.has(m) || (m === 'HEAD' && methods.has('GET'));
    const allowed = METHODS.filter(serves);
    const others = METHODS.filter((m) => !serves(m));
    if (others.length === 0) continue;
    const allow = allowed.join(', ');
    const refuse = async (request: FastifyRequest) => {
      throw new HttpError('METHOD_NOT_ALLOWED', `${request.method} is not allowed on ${url} (allowed: ${allow})`, { allow });
    };
    app.route({
      method: others,
      url,
      exposeHeadRoute: false,
      config: { filler: true },
      // Route hooks run after the server's (authentication, shutdown), before the body is parsed.
      onRequest: refuse,
      handler: refuse,
    });
  }
}

/** Why `listen` failed, as a CairnError: a taken port is BUSY, an address that cannot be bound INVALID_INPUT. */
function listenError(address: ListenAddress, err: unknown): CairnError {
  const code = (err as NodeJS.ErrnoException)?.code;
  const where = `${address.host}:${address.port}`;
  if (code === 'EADDRINUSE') return new CairnError('BUSY', `cannot listen on ${where}: the address is in use`, { cause: err });
  if (code === 'EACCES' || code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return new CairnError('INVALID_INPUT', `cannot listen on ${where} (${code})`, { cause: err });
  }
  return new CairnError('UNAVAILABLE', `cannot listen on ${where}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}
