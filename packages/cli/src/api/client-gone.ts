import type { FastifyReply } from 'fastify';

/**
 * A signal that aborts when the connection of `reply` closes before the answer was sent: the
 * client went away (a long-poll, a request reading the whole store), and nobody waits for the
 * answer any more. It also aborts once the answer was sent (the response closes then too), when
 * nothing listens to it any more.
 */
export function clientGone(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => controller.abort());
  return controller.signal;
}
