// The workerd tests' own Worker: it exports the Durable Object classes the bindings name, as the
// consumer Worker does in production. Tests call the handlers' modules directly.
export { Dispatcher } from "../../shared/dispatcher.ts";
export { LiveChannel, LiveHub } from "../../shared/live-hub.ts";

export default {
  fetch(): Response {
    return new Response("reel-exports test worker");
  },
};
