// Dead letters: every message of export-jobs-dlq, and every message of export-jobs whose body
// does not parse, is recorded in D1 (idempotent on message id) and then acknowledged.

import { log } from "../shared/log.ts";
import { jobMessage } from "../shared/schemas.ts";
import type { DeadLetterRow } from "../shared/sql/dead-letters.ts";
import * as repo from "../shared/sql/dead-letters.ts";

/** The body as text, whatever it is: a dead letter must be recordable even when it is odd. */
function bodyAsText(body: unknown): string {
  if (typeof body === "string") return JSON.stringify(body);
  for (const render of [() => JSON.stringify(body), () => String(body)]) {
    try {
      const text = render();
      if (typeof text === "string") return text;
    } catch {}
  }
  return `<unprintable ${typeof body}>`;
}

/** A job id when the body carries one, even if the rest of the body is odd. */
function jobIdOf(body: unknown): string | null {
  const parsed = jobMessage.safeParse(body);
  return parsed.success ? parsed.data.job_id : null;
}

export async function recordDeadLetterMessages(
  db: D1Database,
  queue: string,
  reason: DeadLetterRow["reason"],
  messages: readonly Message<unknown>[],
): Promise<void> {
  if (messages.length === 0) return;
  await repo.recordDeadLetters(
    db,
    messages.map((message) => ({
      id: message.id,
      queue,
      reason,
      body: bodyAsText(message.body),
      attempts: message.attempts,
      job_id: jobIdOf(message.body),
    })),
  );
  for (const message of messages) {
    log("warn", "dead letter recorded", { id: message.id, queue, reason });
    message.ack();
  }
}
