import { CairnError, quotedCut } from '@cairn/core';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';

/** What a route handler gets: path parameters and the validated query and body. */
export interface RouteInput<Q, B> {
  params: Record<string, string>;
  query: Q;
  body: B;
  request: FastifyRequest;
  reply: FastifyReply;
}

/** One endpoint: its validation schemas, its success status and the handler returning the JSON body. */
export interface RouteSpec<Q, B> {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  url: string;
  /** Query parameters accepted (a strict object). Default: none; any parameter is INVALID_INPUT. */
  query?: z.ZodType<Q>;
  /**
   * Body accepted (a strict object). Default: none; a body other than `{}` is INVALID_INPUT. A GET
   * route takes no body at all (see `refuseGetContent`); `body` is for the other methods.
   */
  body?: z.ZodType<B>;
  /** Status on success. Default 200. */
  status?: number;
  handler(input: RouteInput<Q, B>): Promise<unknown>;
}

const NoQuery = z.strictObject({});
// Optional bodies are `.optional()`, never a union with undefined: a union's failure is a bare
// "Invalid input" on `body`, where `.optional()` names the offending field.
const NoBody = z.strictObject({}).optional();

/**
 * Registers `spec` on `app`. Query and body are validated before the handler runs (unknown
 * fields included): a failure is INVALID_INPUT with `details.issues: [{path, message}]`. A GET
 * (and the HEAD fastify derives from it) with content is INVALID_INPUT too (`refuseGetContent`).
 * Whatever the handler throws goes to the server's error handler.
 */
export function addRoute<Q = Record<string, never>, B = undefined>(app: FastifyInstance, spec: RouteSpec<Q, B>): void {
  if (spec.method === 'GET' && spec.body) throw new Error(`GET ${spec.url} cannot take a body`);
  const querySchema = (spec.query ?? NoQuery) as z.ZodType<Q>;
  const bodySchema = (spec.body ?? NoBody) as z.ZodType<B>;
  app.route({
    method: spec.method,
    url: spec.url,
    handler: async (request, reply) => {
      if (spec.method === 'GET') refuseGetContent(request);
      const query = parseInput(querySchema, request.query, 'query');
      const body = parseInput(bodySchema, request.body, 'body');
      const value = await spec.handler({ params: request.params as Record<string, string>, query, body, request, reply });
      reply.code(spec.status ?? 200);
      return value;
    },
  });
}

/**
 * Refuses a GET (or HEAD) request that carries content: INVALID_INPUT, whatever the content (even
 * `{}`). Content in a GET has no meaning in HTTP (RFC 9110 §9.3.1) and fastify does not parse it,
 * so it would otherwise be ignored silently, while the API refuses every input it does not use.
 * Content is judged by the framing headers: any `Transfer-Encoding`, or a `Content-Length` other
 * than 0 (an empty body counts as none, as on the other methods). The content is never read; Node
 * discards it before the next request on the connection.
 */
function refuseGetContent(request: FastifyRequest): void {
  const { 'transfer-encoding': te, 'content-length': length } = request.headers;
  if (te === undefined && (length === undefined || Number(length) === 0)) return;
  const issues = [{ path: 'body', message: 'a GET request carries no content' }];
  throw new CairnError('INVALID_INPUT', `${request.method} ${request.routeOptions.url ?? request.url.split('?')[0]} takes no body: send the request without one`, { details: { issues } });
}

/** Validates `value` against `schema`; INVALID_INPUT naming every issue otherwise. */
export function parseInput<T>(schema: z.ZodType<T>, value: unknown, where: 'query' | 'body'): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.map((i) => ({ path: [where, ...i.path.map(String)].join('.'), message: i.message }));
  const message =
    where === 'body' && value === undefined
      ? 'this request needs a JSON body (Content-Type: application/json)'
      : `invalid ${where === 'body' ? 'request body' : 'query parameters'}: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`;
  throw new CairnError('INVALID_INPUT', message, { details: { issues } });
}

/** A JSON-body boolean flag given in the query: `true` or `false`, nothing else. */
export const QueryFlag = z.enum(['true', 'false']).transform((v) => v === 'true');

/** A non-empty string field. */
export const Text = z.string().min(1, 'expected a non-empty string');

const ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$/;

/**
 * Checks the shape of an id taken from the path. An id that cannot exist (empty, `..`, `/`…) is
 * NOT_FOUND like any unknown id, and never reaches a catalog key or a file name.
 */
export function pathId(params: Record<string, string>, name: string, what: string): string {
  const id = params[name] ?? '';
  if (!ID.test(id)) throw new CairnError('NOT_FOUND', `no ${what} ${quotedCut(id, 200)}`);
  return id;
}
