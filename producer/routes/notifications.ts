// Operators' view of outbound webhooks (bearer ADMIN_TOKEN): the outbox, newest first, by status
// (`failed`: the deliveries that gave up), and a redelivery of one.
import { createRoute, type RouteHandler, z } from "@hono/zod-openapi";
import {
  listNotifications as list,
  type NotificationRow,
  redeliverNotification,
} from "../../shared/sql/notifications.ts";
import { auth, errorReplies, pageQuery, queryParam, reply } from "../api.ts";
import { NotificationEnvelope, NotificationPage } from "../api-schemas.ts";
import { readCursor, toPage } from "../cursor.ts";
import { type AppEnv, apiError, badCursor } from "../http.ts";

/** A notification as the API answers it: without its stored body. */
export function toNotification({ body: _body, due_at, ...row }: NotificationRow) {
  return { ...row, next_attempt_at: row.status === "pending" ? due_at : null };
}

export const listNotificationsRoute = createRoute({
  method: "get",
  path: "/admin/notifications",
  operationId: "listNotifications",
  summary:
    "Outbound webhooks (NOTIFY_URL), newest first; `status=failed`: the deliveries that gave up",
  tags: ["operators"],
  ...auth("adminToken"),
  request: {
    query: z.object({
      status: queryParam(z.enum(["pending", "delivered", "failed"]).optional(), {
        emptyIsAbsent: true,
      }),
      ...pageQuery(20).shape,
    }),
  },
  responses: {
    200: reply("one page", NotificationPage),
    ...errorReplies("adminToken", { 400: ["invalid_request"] }),
  },
});

/** `GET /admin/notifications?status=&limit=&cursor=`. */
export const listNotifications: RouteHandler<typeof listNotificationsRoute, AppEnv> = async (c) => {
  const { status, limit, cursor: raw } = c.req.valid("query");
  const cursor = readCursor(raw);
  if (!cursor) return badCursor(c);
  const rows = await list(c.env.DB, status ?? null, cursor.after, limit);
  const page = toPage(rows, limit, (row) => ({ created_at: row.ended_at, id: row.id }));
  return c.json(
    { notifications: page.items.map(toNotification), next_cursor: page.next_cursor },
    200,
  );
};

export const redeliverNotificationRoute = createRoute({
  method: "post",
  path: "/admin/notifications/{id}/redeliver",
  operationId: "redeliverNotification",
  summary:
    "Send a notification again: a new series of tries (24 h), the first now, whatever its status",
  tags: ["operators"],
  ...auth("adminToken"),
  request: {
    params: z.object({
      id: z.string().openapi({ description: "the notification's id (its webhook-id)" }),
    }),
  },
  responses: {
    202: reply("the notification, pending again", NotificationEnvelope),
    ...errorReplies("adminToken", { 404: ["not_found"] }),
  },
});

/** `POST /admin/notifications/{id}/redeliver` → 202; the consumer tries it at once. */
export const redeliver: RouteHandler<typeof redeliverNotificationRoute, AppEnv> = async (c) => {
  const row = await redeliverNotification(c.env.DB, c.req.valid("param").id);
  if (!row) return apiError(c, 404, "not_found", "no such notification");
  try {
    await c.env.NOTIFY_QUEUE.send({ notification_id: row.id });
  } catch {
    // Due now: the cron's sweep hands it to the queue within a minute.
  }
  return c.json({ notification: toNotification(row) }, 202);
};
