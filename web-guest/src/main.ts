// Entry point of the task page (/t/{task_id}#secret=...).

import { App } from "./app";

const container = document.getElementById("terminal");
if (container === null) throw new Error("page is missing #terminal");
void new App(container).start();
