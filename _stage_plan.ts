// The validated form of a Stage that pipeline runs read. It lives outside stage.ts so it stays
// out of the public API.

import type { Limiter } from "./semaphore.ts";
import type { ItemFailureInfo, ItemInfo, Stage, StageTask } from "./stage.ts";
import type { RetryPolicy } from "./_retry.ts";

/** A stage's task with its resolved name and limiter. */
export interface ResolvedTask {
  readonly fn: StageTask<unknown, unknown>;
  readonly name: string;
  readonly limiter: Limiter | undefined;
}

/** Everything a pipeline run needs to know about one stage. */
export interface StagePlan {
  readonly name: string;
  readonly workers: number;
  readonly queueCapacity: number;
  readonly timeoutMs: number | undefined;
  readonly stageTimeoutMs: number | undefined;
  readonly tasks: readonly ResolvedTask[];
  readonly retry: RetryPolicy | undefined;
  readonly retryScope: "task" | "stage";
  readonly skipIf: ((value: unknown, info: ItemInfo) => boolean | PromiseLike<boolean>) | undefined;
  readonly onSuccess: ((value: unknown, info: ItemInfo) => unknown) | undefined;
  readonly onFailure: ((error: unknown, info: ItemFailureInfo) => unknown) | undefined;
  readonly onSkip: ((value: unknown, info: ItemInfo) => unknown) | undefined;
}

const plans = new WeakMap<Stage<unknown, unknown>, StagePlan>();

/** Records the plan of a stage; called by the Stage constructor. */
export function registerPlan(stage: Stage<unknown, unknown>, plan: StagePlan): void {
  plans.set(stage, plan);
}

/** Returns the plan of a stage, or throws a `TypeError` for anything that is not a Stage. */
export function planOf(stage: unknown, message: () => string): StagePlan {
  const plan = plans.get(stage as Stage<unknown, unknown>);
  if (plan === undefined) throw new TypeError(message());
  return plan;
}
