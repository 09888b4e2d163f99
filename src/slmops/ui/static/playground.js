// The stack playground: the form posts to /stacks/NAME/stream and the answer is written as
// the server-sent events arrive, then its sources and trace. Without JavaScript the same form
// posts to /stacks/NAME/run and the whole answer comes back as a page. Text goes into the
// page through textContent only: an answer holding markup is shown, never run.
(() => {
  "use strict";
  const form = document.getElementById("playground");
  if (!form || !window.fetch || !window.ReadableStream || !window.TextDecoder) return;
  const $ = (id) => document.getElementById(id);
  const status = $("playground-status");
  const button = form.querySelector("button[type=submit]");

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function reset() {
    const old = $("run-error");
    if (old) old.remove();
    $("run-result").hidden = false;
    $("run-answer").textContent = "";
    $("run-reason").textContent = "";
    $("run-refused").hidden = true;
    $("run-structured").hidden = true;
    $("run-sources").replaceChildren();
    $("run-sources-box").hidden = true;
    $("run-trace").replaceChildren();
  }

  function fail(message) {
    const box = element("p", "flash error", message);
    box.id = "run-error";
    box.setAttribute("role", "alert");
    $("run-result").before(box);
    status.textContent = "failed";
  }

  function finish(result) {
    $("run-answer").textContent = result.answer;
    $("run-refused").hidden = !result.refused;
    if (result.reason) $("run-reason").textContent = "reason: " + result.reason;
    if (result.structured) {
      $("run-structured").textContent = result.structured;
      $("run-structured").hidden = false;
    }
    const sources = $("run-sources");
    for (const citation of result.citations) {
      const item = element("li");
      const source = element("div", "source", `[${citation.n}] ${citation.source} `);
      source.append(element("span", "muted small", `support ${citation.support.toFixed(2)}`));
      item.append(source, element("blockquote", "", citation.excerpt));
      sources.append(item);
    }
    $("run-sources-box").hidden = result.citations.length === 0;
    const trace = $("run-trace");
    const link = element("a", "mono", result.trace_id.slice(0, 12));
    link.href = result.trace_url;
    const ms = result.duration_ms;
    const took = ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
    trace.append("trace ", link, ` · ${took}` + (result.answered_by ? ` · ${result.answered_by}` : ""));
    status.textContent = "done";
  }

  function handle(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
    }
    if (!data.length) return;
    const payload = JSON.parse(data.join("\n"));
    if (event === "start") status.textContent = "running…";
    else if (event === "token") {
      status.textContent = "streaming…";
      $("run-answer").textContent += payload.text;
    } else if (event === "done") finish(payload);
    else if (event === "error") fail(payload.message);
  }

  async function errorOf(response) {
    // The console answers a refused run with its error page: show that page's message.
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const flash = page.querySelector(".flash.error");
    return flash ? flash.textContent : `the console answered ${response.status}`;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    reset();
    button.disabled = true;
    status.textContent = "starting…";
    try {
      const response = await fetch(form.dataset.stream, {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        headers: { Accept: "text/event-stream" },
        credentials: "same-origin",
      });
      if (!response.ok || !response.body) {
        fail(await errorOf(response));
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          handle(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
        }
      }
      if (buffer.trim()) handle(buffer);
    } catch (error) {
      fail(`the run was interrupted: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  });
})();
