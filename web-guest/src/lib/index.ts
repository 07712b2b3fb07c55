// The embeddable web guest: `import { mountTerminal } from "…/assets/lib/rendezvous-guest.js"`.
// Built into dist/assets/lib/rendezvous-guest.js (ES module), with
// rendezvous-guest.d.ts (from api.ts) and rendezvous-guest.css.

export { mountTerminal } from "./mount";
export type * from "./api";
