/*
 * tapad.js: send clicks and impressions from a web page to the tapad server that serves
 * this file.
 *
 *   <script src="https://HOST/tapad.js" data-key="WRITE_TOKEN" defer></script>
 *   tapad.impression("alice");  tapad.click("alice");
 *
 * Events are queued and sent as one batch (POST /analytics/batch, NDJSON) at most once a
 * second, and at once when the page is hidden or left. Each event gets a random UUID id,
 * so the server counts it at most once; it carries no timestamp: the server's clock is used.
 *
 * Batches go out with navigator.sendBeacon as text/plain, which needs no CORS preflight and
 * survives the page being closed; where sendBeacon is missing or refuses (it returns false),
 * fetch with keepalive does the same. Browsers cap what such requests may carry (64 KiB), so
 * the queue is split into payloads below that. A page never sees a beacon's answer: an event
 * is sent at most once and never retried (docs/clients-browser.md says what follows).
 */
(function () {
  "use strict";

  var script = document.currentScript;
  // The server is where this script came from, whatever page loads it.
  var server = new URL(script.src).origin;
  var key = script.getAttribute("data-key");
  var url = server + "/analytics/batch" + (key ? "?key=" + encodeURIComponent(key) : "");

  var INTERVAL = 1000; // ms: at most one batch a second while the page is shown
  var MAX_PAYLOAD = 60000; // bytes: under the browsers' 64 KiB for beacons and keepalive
  var MAX_USER = 256; // characters, as the server counts them
  var CONTROL = /[\u0000-\u001f\u007f]/;
  var LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(^|[^\ud800-\udbff])[\udc00-\udfff]/;

  var queue = []; // NDJSON lines not yet sent
  var timer = null;

  function uuid() {
    if (crypto.randomUUID) return crypto.randomUUID(); // only on https:// and localhost
    var b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    var hex = Array.prototype.map.call(b, function (x) {
      return (x + 0x100).toString(16).slice(1);
    }).join("");
    return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20),
      hex.slice(20)].join("-");
  }

  // A batch is all or nothing: one bad user name would lose every event sent with it, so
  // the call that makes one fails instead, at once.
  function checkUser(user) {
    if (typeof user !== "string") throw new TypeError("tapad: user must be a string");
    var chars = Array.from(user).length;
    if (chars < 1 || chars > MAX_USER) {
      throw new RangeError("tapad: user must be 1 to " + MAX_USER + " characters, got " + chars);
    }
    if (CONTROL.test(user)) throw new RangeError("tapad: user must not contain control characters");
    if (LONE_SURROGATE.test(user)) throw new RangeError("tapad: user is not valid Unicode");
  }

  function record(kind, user) {
    checkUser(user);
    queue.push(JSON.stringify({ user: user, event: kind, id: uuid() }));
    if (timer === null) timer = setTimeout(flush, INTERVAL);
  }

  // One payload to the server; false when the browser would not take it (then nothing was
  // sent, and its events stay queued for the next flush).
  function send(body) {
    if (navigator.sendBeacon) {
      // a string goes as text/plain;charset=UTF-8: no preflight
      if (navigator.sendBeacon(url, body)) return true;
    }
    if (!window.fetch) return false;
    try {
      fetch(url, {
        method: "POST",
        body: body,
        keepalive: true,
        mode: "no-cors", // the answer is not read: no CORS needed, as for a beacon
        credentials: "omit",
        headers: { "Content-Type": "text/plain" },
      }).catch(function () {}); // sent or not, a page cannot tell (at most once)
      return true;
    } catch (e) {
      return false;
    }
  }

  // Everything queued, in payloads under MAX_PAYLOAD bytes.
  function flush() {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    var encoder = new TextEncoder();
    while (queue.length) {
      var size = 0;
      var count = 0;
      while (count < queue.length) {
        var bytes = encoder.encode(queue[count]).length + 1; // the line and its "\n"
        if (count && size + bytes > MAX_PAYLOAD) break;
        size += bytes;
        count += 1;
      }
      if (!send(queue.slice(0, count).join("\n") + "\n")) break;
      queue.splice(0, count);
    }
    if (queue.length && timer === null) timer = setTimeout(flush, INTERVAL);
  }

  // A page being hidden may never run another line: send what is queued now.
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") flush();
  });
  window.addEventListener("pagehide", flush);

  window.tapad = {
    click: function (user) { record("click", user); },
    impression: function (user) { record("impression", user); },
    flush: flush,
  };
})();
