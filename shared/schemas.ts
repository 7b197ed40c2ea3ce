import { z } from "zod";

export const JOB_TYPES = ["framing", "overlay", "annotate"] as const;
export type JobType = (typeof JOB_TYPES)[number];

const MAX_KEY_BYTES = 1024;
const utf8 = new TextEncoder();

/** A relative R2 key: no leading "/", no "." or ".." segment, no control characters. */
export const r2Key = z
  .string()
  .min(1)
  .refine((key) => !key.startsWith("/"), "must be relative (no leading '/')")
  .refine(
    (key) => !key.split("/").some((segment) => segment === ".." || segment === "."),
    "must not contain '.' or '..' segments",
  )
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  .refine((key) => !/[\u0000-\u001f\u007f]/.test(key), "must not contain control characters")
  .refine(
    (key) => utf8.encode(key).length <= MAX_KEY_BYTES,
    `must be at most ${MAX_KEY_BYTES} bytes`,
  );

const cropKeyframe = z.looseObject({
  time: z.number().min(0),
  x: z.number(),
  y: z.number(),
  width: z.number().positive(),
  height: z.number().positive(),
});

const highlightRegion = z
  .looseObject({ start_time: z.number().min(0), end_time: z.number() })
  .refine((region) => region.end_time > region.start_time, {
    message: "end_time must be greater than start_time",
    path: ["end_time"],
  });

/** How deep `params` may nest: far beyond any export's needs, far below a stack's limits. */
export const MAX_PARAMS_DEPTH = 32;

/** The nesting depth of a JSON value, counted without recursion. */
function depthOf(value: unknown): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [item, depth] = stack.pop() as [unknown, number];
    if (typeof item !== "object" || item === null) continue;
    deepest = Math.max(deepest, depth);
    if (deepest > MAX_PARAMS_DEPTH) return deepest;
    for (const child of Object.values(item)) stack.push([child, depth + 1]);
  }
  return deepest;
}

/** A type's `params`: its own checks, and a bounded depth (canonical hashing, live messages). */
const paramsOf = <T extends z.core.$ZodLooseShape>(shape: T) =>
  z.looseObject(shape).refine((params) => depthOf(params) <= MAX_PARAMS_DEPTH, {
    message: `must not nest deeper than ${MAX_PARAMS_DEPTH} levels`,
  });

const projectId = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);
/** The project's owner as the frontend's backend knows it: the fairness key of dispatch. */
const userId = z.number().int().positive().max(Number.MAX_SAFE_INTEGER).optional();

/**
 * `supersede_key` (1–200 chars): the new job ends the project's older pending or processing jobs
 * under the same key (an identical one is followed instead). `reuse: false`: never reuse an
 * identical export's output nor follow an identical job on its way (default true).
 */
const gpuSaving = {
  priority: z.enum(["interactive", "standard", "batch"]).optional(),
  supersede_key: z
    .string()
    .min(1, "must be 1 to 200 characters")
    .max(200, "must be 1 to 200 characters")
    .optional(),
  reuse: z.boolean().optional(),
};

/** `POST /exports` body; `params` is validated per `type`, unknown params keys pass through. */
export const createExportRequest = z.discriminatedUnion("type", [
  z.object({
    project_id: projectId,
    user_id: userId,
    type: z.literal("framing"),
    input_video_key: r2Key,
    ...gpuSaving,
    params: paramsOf({ crop_keyframes: z.array(cropKeyframe).min(1) }),
  }),
  z.object({
    project_id: projectId,
    user_id: userId,
    type: z.literal("overlay"),
    input_video_key: r2Key,
    ...gpuSaving,
    params: paramsOf({ highlight_regions: z.array(highlightRegion).min(1) }),
  }),
  z.object({
    project_id: projectId,
    user_id: userId,
    type: z.literal("annotate"),
    input_video_key: r2Key,
    ...gpuSaving,
    params: paramsOf({ annotations: z.array(z.unknown()).min(1) }),
  }),
]);
export type CreateExportRequest = z.infer<typeof createExportRequest>;

/** At most this many exports in one `POST /exports/batch`. */
export const MAX_BATCH_EXPORTS = 100;

/** `POST /exports/batch` body: 1 to 100 `POST /exports` bodies, each with its Idempotency-Key. */
export const batchCreateRequest = z.object({
  exports: z
    .array(
      createExportRequest.and(
        z.object({
          idempotency_key: z
            .string()
            .min(1, "must be 1 to 255 characters")
            .max(255, "must be 1 to 255 characters")
            .optional(),
        }),
      ),
    )
    .min(1)
    .max(MAX_BATCH_EXPORTS),
});

/** The queue message: the job id and nothing else; the row is the truth. */
export const jobMessage = z.object({ job_id: z.uuid() });
export type JobMessage = z.infer<typeof jobMessage>;

export const RUNPOD_STATUSES = [
  "IN_QUEUE",
  "IN_PROGRESS",
  "COMPLETED",
  "FAILED",
  "CANCELLED",
  "TIMED_OUT",
] as const;
export type RunpodStatus = (typeof RUNPOD_STATUSES)[number];

/** RunPod's job status object, as returned by `/status/{id}` and posted to webhooks. */
export const runpodStatusObject = z.looseObject({
  id: z.string().min(1),
  status: z.enum(RUNPOD_STATUSES),
  output: z.unknown().optional(),
  error: z.unknown().optional(),
  delayTime: z.number().optional(),
  executionTime: z.number().optional(),
});
export type RunpodStatusObject = z.infer<typeof runpodStatusObject>;

/**
 * `POST /runpod/progress/{id}` body. `runpod_job_id` (optional): the run's id as RunPod gave it to
 * the handler (`job["id"]`); a run whose `/run` answer never reached the consumer is adopted by it.
 */
export const progressReport = z.object({
  progress: z.number().min(0).max(100),
  runpod_job_id: z.string().min(1).max(255).optional(),
});
