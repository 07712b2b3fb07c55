// The xterm.js terminal: creation, colours that follow the system theme, and fitting.

import { Terminal, type ITheme } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";

/** Lines of scrollback the browser keeps. */
const SCROLLBACK_LINES = 10_000;

const DARK: ITheme = {
  background: "#16181d",
  foreground: "#d7dae0",
  cursor: "#d7dae0",
  cursorAccent: "#16181d",
  selectionBackground: "#3a4560",
};

const LIGHT: ITheme = {
  background: "#fbfbf9",
  foreground: "#24292f",
  cursor: "#24292f",
  cursorAccent: "#fbfbf9",
  selectionBackground: "#b6d3f5",
  // xterm's default palette is tuned for dark backgrounds; these stay legible on light.
  black: "#24292f",
  red: "#c4302b",
  green: "#1a7f37",
  yellow: "#8a6100",
  blue: "#0550ae",
  magenta: "#8250df",
  cyan: "#1b7c83",
  white: "#6e7781",
  brightBlack: "#57606a",
  brightRed: "#e0413c",
  brightGreen: "#2da44e",
  brightYellow: "#a37500",
  brightBlue: "#218bff",
  brightMagenta: "#a475f9",
  brightCyan: "#3192aa",
  brightWhite: "#8c959f",
};

/** A terminal mounted in `container` that fills it and refits when it changes size. */
export function mountTerminal(container: HTMLElement): { term: Terminal; fit: () => void } {
  const dark = window.matchMedia("(prefers-color-scheme: dark)");
  const term = new Terminal({
    cursorBlink: true,
    fontFamily: 'ui-monospace, "SF Mono", Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace',
    fontSize: 14,
    scrollback: SCROLLBACK_LINES,
    theme: dark.matches ? DARK : LIGHT,
  });
  const fitAddon = new FitAddon();
  term.loadAddon(fitAddon);
  term.open(container);

  dark.addEventListener("change", () => {
    term.options.theme = dark.matches ? DARK : LIGHT;
  });

  // Coalesce bursts of resize notifications into one fit per frame.
  let pending = false;
  const fit = (): void => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      fitAddon.fit();
    });
  };
  window.addEventListener("resize", fit);
  new ResizeObserver(fit).observe(container);
  fitAddon.fit();
  term.focus();
  return { term, fit };
}
