import { CMD, CMD_FLAG, TF } from './protocol.js';

/**
 * Why the server refuses a request's command flags given the transmission flags it sent, or
 * undefined when it takes them. proto.md, "Command flags": clients "MUST NOT set a command flag
 * bit that is not documented for the particular command; and whether a flag is valid may depend
 * on negotiation"; "Error values": the server "SHOULD return NBD_EINVAL if it receives an unknown
 * command flag", or "a request with a flag not explicitly documented as applicable to the given
 * request". Per flag:
 * - FUA: "valid for all commands, provided NBD_FLAG_SEND_FUA has been negotiated, in which case
 *   the server MUST accept all commands with this bit set (even by ignoring the bit)": taken on
 *   any command when SEND_FUA was sent, refused otherwise.
 * - NO_HOLE: WRITE_ZEROES only (offered together with SEND_WRITE_ZEROES; without it the command
 *   itself is refused).
 * - DF: READ only, and only when SEND_DF was sent ("MUST NOT be set unless the transmission flags
 *   include NBD_FLAG_SEND_DF").
 * - REQ_ONE: BLOCK_STATUS only.
 * - FAST_ZERO: WRITE_ZEROES only, and only when SEND_FAST_ZERO was sent; without it "SHOULD fail
 *   with NBD_EINVAL if the NBD_CMD_FLAG_FAST_ZERO flag was set" (and SHOULD NOT use ENOTSUP).
 * Any other bit is unknown. Unknown commands are not judged here (they are refused anyway).
 */
export function commandFlagRefusal(type: number, flags: number, transmission: number): string | undefined {
  const unknown = flags & ~(CMD_FLAG.FUA | CMD_FLAG.NO_HOLE | CMD_FLAG.DF | CMD_FLAG.REQ_ONE | CMD_FLAG.FAST_ZERO);
  if (unknown !== 0) return `unknown command flag 0x${unknown.toString(16)}`;
  const has = (flag: number): boolean => (flags & flag) !== 0;
  const sent = (flag: number): boolean => (transmission & flag) !== 0;
  if (has(CMD_FLAG.FUA) && !sent(TF.SEND_FUA)) return 'NBD_CMD_FLAG_FUA without NBD_FLAG_SEND_FUA';
  if (has(CMD_FLAG.NO_HOLE) && type !== CMD.WRITE_ZEROES) return 'NBD_CMD_FLAG_NO_HOLE applies to WRITE_ZEROES only';
  if (has(CMD_FLAG.DF) && type !== CMD.READ) return 'NBD_CMD_FLAG_DF applies to READ only';
  if (has(CMD_FLAG.DF) && !sent(TF.SEND_DF)) return 'NBD_CMD_FLAG_DF without NBD_FLAG_SEND_DF (structured replies not negotiated)';
  if (has(CMD_FLAG.REQ_ONE) && type !== CMD.BLOCK_STATUS) return 'NBD_CMD_FLAG_REQ_ONE applies to BLOCK_STATUS only';
  if (has(CMD_FLAG.FAST_ZERO) && type !== CMD.WRITE_ZEROES) return 'NBD_CMD_FLAG_FAST_ZERO applies to WRITE_ZEROES only';
  if (has(CMD_FLAG.FAST_ZERO) && !sent(TF.SEND_FAST_ZERO)) return 'NBD_CMD_FLAG_FAST_ZERO without NBD_FLAG_SEND_FAST_ZERO';
  return undefined;
}
