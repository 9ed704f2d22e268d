// The playground: a chat sent through one of the user's tokens, streamed back as it comes.
// The conversation lives in this page's memory only; nothing of it is stored anywhere.
(function () {
  "use strict";

  var data, form, input, tokenSelect, modelSelect, systemInput, log, empty, errorBox;
  var sendButton, stopButton, clearButton;
  var history = []; // {role, content} of the turns so far, without the system message
  var controller = null;

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"];
    } catch (e) {
      return "";
    }
  }

  function currentToken() {
    var id = Number(tokenSelect.value);
    return data.tokens.filter(function (token) { return token.id === id; })[0];
  }

  function fillModels() {
    var token = currentToken();
    var keep = modelSelect.value || data.example_model;
    modelSelect.innerHTML = "";
    (token ? token.models : []).forEach(function (model) {
      var option = document.createElement("option");
      option.textContent = model;
      option.selected = model === keep;
      modelSelect.appendChild(option);
    });
  }

  function conversation(draft) {
    var messages = [];
    var system = systemInput.value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages = messages.concat(history);
    if (draft) messages.push({ role: "user", content: draft });
    return messages;
  }

  // The same request as code, the key read from the environment: never a real key.
  function showCode() {
    var messages = conversation(input.value.trim() || "Hello!");
    var payload = { model: modelSelect.value, messages: messages, stream: true };
    var json = JSON.stringify(payload, null, 2).replace(/'/g, "'\\''");
    document.getElementById("pg-curl-text").textContent =
      "curl " + data.api_base + "/chat/completions \\\n" +
      "  -H \"Authorization: Bearer $SWITCHBOARD_API_KEY\" \\\n" +
      "  -H \"Content-Type: application/json\" \\\n" +
      "  -d '" + json + "'";
    var lines = messages.map(function (message) {
      return "        {\"role\": " + JSON.stringify(message.role) + ", \"content\": " +
        JSON.stringify(message.content) + "},";
    });
    document.getElementById("pg-python-text").textContent =
      "import os\n\nfrom openai import OpenAI\n\n" +
      "client = OpenAI(\n    base_url=\"" + data.api_base + "\",\n" +
      "    api_key=os.environ[\"SWITCHBOARD_API_KEY\"],\n)\n" +
      "stream = client.chat.completions.create(\n" +
      "    model=" + JSON.stringify(modelSelect.value) + ",\n" +
      "    messages=[\n" + lines.join("\n") + "\n    ],\n" +
      "    stream=True,\n)\n" +
      "for chunk in stream:\n" +
      "    if chunk.choices:\n" +
      "        print(chunk.choices[0].delta.content or \"\", end=\"\", flush=True)\n";
  }

  function bubble(role, text) {
    var item = document.createElement("li");
    item.className = "chat-message from-" + role;
    var who = document.createElement("p");
    who.className = "chat-role";
    who.textContent = role === "user" ? "You" : modelSelect.value;
    var body = document.createElement("div");
    body.className = "chat-text";
    body.textContent = text;
    item.appendChild(who);
    item.appendChild(body);
    log.appendChild(item);
    empty.hidden = true;
    return item;
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function busy(on) {
    sendButton.disabled = on;
    sendButton.classList.toggle("htmx-request", on);
    stopButton.hidden = !on;
    clearButton.disabled = on;
  }

  function costLine(item, requestId, usage) {
    var line = document.createElement("p");
    line.className = "chat-cost";
    var parts = [];
    if (usage && typeof usage.cost === "number") parts.push("Cost $" + usage.cost.toFixed(6));
    if (usage && usage.prompt_tokens !== undefined) {
      parts.push(usage.prompt_tokens + " tokens in, " + usage.completion_tokens + " out");
    }
    line.textContent = parts.join(" · ") + (parts.length ? " · " : "");
    if (requestId) {
      var link = document.createElement("a");
      link.href = data.breakdown_url.replace(data.placeholder, requestId);
      link.textContent = "Cost breakdown";
      line.appendChild(link);
    }
    item.appendChild(line);
  }

  // Reads a server-sent event stream of chat chunks into `item`; returns the usage, if any.
  async function readStream(response, item) {
    var text = item.querySelector(".chat-text");
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "", usage = null, answer = "";
    for (;;) {
      var part = await reader.read();
      if (part.done) break;
      buffer += decoder.decode(part.value, { stream: true });
      var events = buffer.split("\n\n");
      buffer = events.pop();
      events.forEach(function (event) {
        event.split("\n").forEach(function (line) {
          if (line.indexOf("data:") !== 0) return;
          var payload = line.slice(5).trim();
          if (!payload || payload === "[DONE]") return;
          var chunk;
          try { chunk = JSON.parse(payload); } catch (e) { return; }
          if (chunk.error) { showError(chunk.error.message); return; }
          if (chunk.usage) usage = chunk.usage;
          var choice = chunk.choices && chunk.choices[0];
          if (choice && choice.delta && choice.delta.content) {
            answer += choice.delta.content;
            text.textContent = answer;
          }
        });
      });
    }
    return { usage: usage, answer: answer };
  }

  async function send(event) {
    event.preventDefault();
    var draft = input.value.trim();
    if (!draft || controller) return;
    errorBox.hidden = true;
    var messages = conversation(draft);
    var mine = bubble("user", draft);
    input.value = "";
    busy(true);
    controller = new AbortController();
    var answerItem = null;
    try {
      var response = await fetch(data.chat_url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify({ token: Number(tokenSelect.value), model: modelSelect.value, messages: messages }),
        signal: controller.signal
      });
      var type = response.headers.get("content-type") || "";
      if (!response.ok || type.indexOf("text/event-stream") !== 0) {
        var message = "The request failed (" + response.status + "). Reload the page and try again.";
        if (type.indexOf("application/json") === 0) {
          var body = await response.json();
          if (body && body.error && body.error.message) message = body.error.message;
        } else if (response.status === 403) {
          message = "Your session has expired or the page is stale: reload the page and try again.";
        }
        throw new Error(message);
      }
      history.push({ role: "user", content: draft });
      answerItem = bubble("assistant", "");
      answerItem.classList.add("streaming");
      var result = await readStream(response, answerItem);
      history.push({ role: "assistant", content: result.answer });
      answerItem.classList.remove("streaming");
      costLine(answerItem, response.headers.get("x-request-id"), result.usage);
    } catch (error) {
      if (answerItem) {
        // Stopped or broken mid-answer: what came stays, billed as it was.
        answerItem.classList.remove("streaming");
        history.push({ role: "assistant", content: answerItem.querySelector(".chat-text").textContent });
        if (error.name === "AbortError") costLine(answerItem, null, null);
      } else {
        log.removeChild(mine);
        empty.hidden = log.children.length > 0;
        input.value = draft;
      }
      if (error.name !== "AbortError") showError(error.message);
    } finally {
      controller = null;
      busy(false);
      showCode();
      input.focus();
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var node = document.getElementById("playground-data");
    form = document.getElementById("chat-form");
    if (!node || !form) return;
    data = JSON.parse(node.textContent);
    input = document.getElementById("chat-input");
    tokenSelect = document.getElementById("pg-token");
    modelSelect = document.getElementById("pg-model");
    systemInput = document.getElementById("pg-system");
    log = document.getElementById("chat-log");
    empty = document.getElementById("chat-empty");
    errorBox = document.getElementById("chat-error");
    sendButton = document.getElementById("chat-send");
    stopButton = document.getElementById("chat-stop");
    clearButton = document.getElementById("chat-clear");

    form.addEventListener("submit", send);
    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
    });
    tokenSelect.addEventListener("change", function () { fillModels(); showCode(); });
    [modelSelect, systemInput, input].forEach(function (el) {
      el.addEventListener("input", showCode);
      el.addEventListener("change", showCode);
    });
    stopButton.addEventListener("click", function () { if (controller) controller.abort(); });
    clearButton.addEventListener("click", function () {
      history = [];
      log.innerHTML = "";
      empty.hidden = false;
      errorBox.hidden = true;
      showCode();
    });
    showCode();
  });
})();
