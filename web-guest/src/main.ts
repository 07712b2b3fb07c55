// Entry point of the task page (/t/{task_id}#secret=...).

import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { Terminal } from "@xterm/xterm";
import { App } from "./app";
import { GuestService } from "./gen/rendezvous/v1/rendezvous_pb";
import { mountTerminal } from "./terminal";

declare global {
  interface Window {
    /** The page's terminal, for browser tests. */
    rendezvousTerm?: Terminal;
  }
}

const container = document.getElementById("terminal");
if (container === null) throw new Error("page is missing #terminal");
const { term, fit } = mountTerminal(container);
window.rendezvousTerm = term;

const transport = createGrpcWebTransport({ baseUrl: window.location.origin });
const app = new App(createClient(GuestService, transport), term, fit);
void app.start();
