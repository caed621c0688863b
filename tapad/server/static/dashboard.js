// tapad dashboard: the current hour from GET /analytics every second, the last 24 hours,
// 48 hours or 7 days from GET /analytics/hours every few seconds, drawn with uPlot, and the
// unique users of each of the last 7 UTC days from GET /analytics/uniques every minute.
// Every time shown is UTC (the local time is in a tooltip), as in the API and the exports.
// Nothing but this server is asked; nothing is built: this file is served as it is.
// A server with a read token answers 401: the page then asks for the token once, keeps it
// for this tab (sessionStorage) and sends it as "Authorization: Bearer"; on a 401 it asks again.
"use strict";

(() => {
  const MS_PER_HOUR = 3600000;
  const NOW_EVERY_MS = 1000; // the current hour: the contract asks for at least every 2 s
  const RANGE_EVERY = 5; // the chart's range is read again every 5th refresh
  const TIMEOUT_MS = 5000;
  const RANGES = { 24: "24 hours", 48: "48 hours", 168: "7 days" };
  const MS_PER_DAY = 24 * MS_PER_HOUR;
  const DAYS = 7; // daily unique users shown
  const UNIQUES_EVERY = 60; // refreshes between two readings of the daily unique users
  const UNIQUES_MISSING_EVERY = 600; // ... when this server has no /analytics/uniques
  // The chart starts on a log scale when its busiest hour is more than this many times the
  // median hour: one busy hour on a linear scale presses every other hour onto the zero line.
  const LOG_FROM_RATIO = 20;
  const NO_VALUE = "\u2014"; // an em dash: a figure this server cannot give
  const TOKEN_KEY = "tapad.readToken";

  const number = new Intl.NumberFormat();
  const compact = new Intl.NumberFormat(undefined, { notation: "compact" });
  const percent = new Intl.NumberFormat(undefined, {
    style: "percent",
    minimumFractionDigits: 2,
    maximumFractionDigits: 2,
  });
  const localClock = new Intl.DateTimeFormat(undefined, {
    dateStyle: "medium",
    timeStyle: "long",
  });
  const dayName = new Intl.DateTimeFormat(undefined, {
    weekday: "short",
    day: "numeric",
    month: "short",
    timeZone: "UTC",
  });
  const utcTime = (date) => `${date.toISOString().slice(11, 19)} UTC`;

  const $ = (selector) => document.querySelector(selector);
  const state = {
    hours: 24,
    rows: [],
    chart: null,
    tick: 0,
    failingSince: null,
    log: null, // true/false once the switch is used; null: chosen from the data (autoLog)
    logShown: false,
    uniquesAt: null, // tick of the last reading of the daily unique users
    uniquesMissing: false,
    token: sessionStorage.getItem(TOKEN_KEY),
    asking: false,
  };

  class Unauthorized extends Error {}

  const hourStart = (ms) => ms - (ms % MS_PER_HOUR);
  const hourLabel = (ms) => new Date(ms).toISOString().slice(0, 13); // YYYY-MM-DDTHH, UTC
  const ctr = (clicks, impressions) => (impressions > 0 ? clicks / impressions : null);
  const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  async function getText(url) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
      const response = await fetch(url, { cache: "no-store", signal: abort.signal, headers });
      const text = await response.text();
      if (response.status === 401) throw new Unauthorized(text.split("\n")[0]);
      if (!response.ok) throw new Error(`${response.status} ${text.split("\n")[0]}`);
      return text;
    } finally {
      clearTimeout(timer);
    }
  }

  function parseCounts(text) {
    const counts = {};
    for (const line of text.trim().split("\n")) {
      const [name, value] = line.split(",");
      counts[name] = Number(value);
    }
    return counts;
  }

  function showMetric(name, value, text) {
    const el = document.querySelector(`[data-metric="${name}"]`);
    el.value = value === null ? "" : String(value);
    el.textContent = text;
  }

  function showNow(start, counts) {
    $("#now-hour").textContent = `${hourLabel(start)} UTC`;
    for (const name of ["unique_users", "clicks", "impressions"]) {
      showMetric(name, counts[name], number.format(counts[name]));
    }
    const rate = ctr(counts.clicks, counts.impressions);
    showMetric("ctr", rate, rate === null ? "–" : percent.format(rate));
  }

  function showStatus(error) {
    const el = $("#status");
    const now = new Date();
    if (error) {
      state.failingSince ??= now;
      el.dataset.state = "error";
      el.textContent = `server not answering since ${utcTime(state.failingSince)} (${error.message}); still trying`;
      el.title = `since ${localClock.format(state.failingSince)} (your time)`;
    } else {
      state.failingSince = null;
      el.dataset.state = "ok";
      el.textContent = `last refreshed ${utcTime(now)} · server answered`;
      el.title = `${localClock.format(now)} (your time)`;
    }
  }

  // -- an empty store: how to send a first event ------------------------------------------

  function showFirstEventHint() {
    const day = state.rows.slice(-24);
    const empty =
      day.length > 0 && day.every((r) => r.unique_users + r.clicks + r.impressions === 0);
    const hint = $("#first-event");
    if (empty && !$("#first-curl").textContent) {
      $("#first-curl").textContent =
        `curl -X POST "${location.origin}/analytics?timestamp=$(date +%s)000&user=alice&impression"`;
    }
    hint.hidden = !empty;
  }

  // -- the chart and the table ------------------------------------------------------------

  function chartData() {
    const rows = state.rows;
    return [
      rows.map((r) => r.timestamp / 1000),
      rows.map((r) => r.unique_users),
      rows.map((r) => r.impressions),
      rows.map((r) => r.clicks),
    ];
  }

  function chartSize() {
    const el = $("#chart");
    const width = Math.max(el.clientWidth - 8, 200);
    return { width, height: width < 520 ? 240 : 320 };
  }

  // Log scale or not: the user's choice once made; until then, log when one hour dwarfs the
  // typical hour (more than LOG_FROM_RATIO times the median), so a busy hour and the quiet
  // ones around it stay readable together; linear otherwise, where it reads most plainly.
  function autoLog() {
    const peaks = state.rows.map((r) => Math.max(r.unique_users, r.clicks, r.impressions));
    if (peaks.length === 0) return false;
    const sorted = [...peaks].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    return sorted[sorted.length - 1] > LOG_FROM_RATIO * Math.max(median, 1);
  }

  const useLog = () => state.log ?? autoLog();

  function showScaleSwitch() {
    $("#scale").setAttribute("aria-pressed", String(state.logShown));
  }

  function makeChart() {
    if (state.chart) state.chart.destroy();
    state.logShown = useLog();
    showScaleSwitch();
    const text = cssVar("--muted");
    const grid = cssVar("--grid");
    const clicksColour = cssVar("--clicks");
    const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    // A log scale (asinh: linear near zero, so hours with no events stay on the baseline), or
    // a linear one from zero.
    const scale = state.logShown
      ? { distr: 4, asinh: 1, range: (u, min, max) => [0, Math.max(max * 1.5, 10)] }
      : { distr: 1, range: (u, min, max) => [0, Math.max(max * 1.1, 1)] };
    // On the log scale, a line and a label at 0 and each power of ten only.
    const decades = (u, axisIdx, min, max) => {
      const splits = [0];
      for (let v = 1; v <= max; v *= 10) splits.push(v);
      return splits;
    };
    const yAxis = {
      ...axis,
      size: 56,
      values: (u, vals) => vals.map((v) => compact.format(v)),
      ...(state.logShown ? { splits: decades } : {}),
    };
    // The legend shows the hour under the cursor, or the newest hour when there is none.
    const at = (u, sidx, idx) => u.data[sidx][idx ?? u.data[sidx].length - 1];
    const line = (label, colour, extra = {}) => ({
      label,
      stroke: colour,
      width: 2,
      points: { show: state.hours <= 48, size: 5, fill: colour },
      ...extra,
      value: (u, v, sidx, idx) => {
        const shown = at(u, sidx, idx);
        return shown == null ? "–" : number.format(shown);
      },
    });
    // Hours on the x axis in UTC, 24-hour clock; the date where a day begins.
    const hourTicks = (u, splits, axisIdx, space, incr) =>
      splits.map((ts) => {
        const iso = new Date(ts * 1000).toISOString();
        const day = iso.slice(5, 10);
        if (incr >= 86400) return day;
        return iso.slice(11, 13) === "00" ? `${iso.slice(11, 16)}\n${day}` : iso.slice(11, 16);
      });
    state.chart = new uPlot(
      {
        ...chartSize(),
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
        scales: { x: { time: true }, y: { ...scale }, clicks: { ...scale } },
        series: [
          {
            label: "Hour (UTC)",
            value: (u, ts, sidx, idx) => {
              const shown = at(u, 0, idx);
              return shown == null ? "–" : hourLabel(shown * 1000);
            },
          },
          line("Unique users", cssVar("--users")),
          line("Impressions", cssVar("--impressions")),
          // Clicks on an axis of their own (right), dashed with every point marked: a few
          // percent of the impressions, they would lie flat under them on one axis, and
          // hide where the lines meet.
          line("Clicks", clicksColour, {
            scale: "clicks",
            dash: [6, 4],
            points: { show: true, size: 6, fill: clicksColour },
          }),
        ],
        axes: [
          { ...axis, values: hourTicks },
          yAxis,
          { ...yAxis, scale: "clicks", side: 1, stroke: clicksColour, grid: { show: false } },
        ],
        cursor: { points: { size: 7 } },
      },
      chartData(),
      $("#chart"),
    );
    // What uPlot was given, for tests and scrapers: "log" or "linear".
    $("#chart").dataset.scale = state.chart.scales.y.distr === 4 ? "log" : "linear";
  }

  function draw() {
    const data = chartData();
    if (!state.chart || useLog() !== state.logShown) makeChart();
    else state.chart.setData(data);
    $("#chart").dataset.points = String(data[0].length);
    drawTable();
  }

  function drawTable() {
    const body = document.createElement("tbody");
    const current = hourStart(Date.now());
    for (const r of [...state.rows].reverse()) {
      const tr = body.insertRow();
      if (r.timestamp === current) tr.className = "current";
      const rate = ctr(r.clicks, r.impressions);
      const hour = tr.insertCell(); // the year hides on a phone
      hour.append(Object.assign(document.createElement("span"), {
        className: "year",
        textContent: r.hour.slice(0, 5),
      }), r.hour.slice(5));
      for (const cell of [
        number.format(r.unique_users),
        number.format(r.clicks),
        number.format(r.impressions),
        rate === null ? "–" : percent.format(rate),
      ]) {
        tr.insertCell().textContent = cell;
      }
    }
    $("#hours tbody").replaceWith(body);
  }

  // -- reading the server -----------------------------------------------------------------

  async function readRange() {
    const now = Date.now();
    const from = hourStart(now) - (state.hours - 1) * MS_PER_HOUR;
    const body = JSON.parse(await getText(`/analytics/hours?from=${from}&to=${now}`));
    state.rows = body.hours;
  }

  async function readNow() {
    const now = Date.now();
    const counts = parseCounts(await getText(`/analytics?timestamp=${now}`));
    const start = hourStart(now);
    showNow(start, counts);
    const last = state.rows[state.rows.length - 1];
    if (last && last.timestamp === start) Object.assign(last, counts); // the chart's newest point
    return !last || last.timestamp !== start; // a new hour began: the range must move on
  }

  // -- daily unique users: one GET /analytics/uniques per UTC day ------------------------

  function uniquesDue() {
    const every = state.uniquesMissing ? UNIQUES_MISSING_EVERY : UNIQUES_EVERY;
    return state.uniquesAt === null || state.tick - state.uniquesAt >= every;
  }

  async function readUniques() {
    state.uniquesAt = state.tick;
    const now = Date.now();
    const today = now - (now % MS_PER_DAY);
    const days = [];
    for (let i = DAYS - 1; i >= 0; i -= 1) days.push(today - i * MS_PER_DAY);
    const answers = await Promise.allSettled(
      days.map((from) =>
        getText(`/analytics/uniques?from=${from}&to=${Math.min(from + MS_PER_DAY - 1, now)}`),
      ),
    );
    state.uniquesMissing = answers.some(
      (a) => a.status === "rejected" && a.reason.message.startsWith("404"),
    );
    const list = document.createElement("ol");
    list.id = "uniques";
    list.className = "uniques";
    days.reverse().forEach((from, i) => {
      const answer = answers[DAYS - 1 - i];
      const li = document.createElement("li");
      if (from === today) li.className = "today";
      const day = new Date(from).toISOString().slice(0, 10);
      const label = Object.assign(document.createElement("span"), {
        className: "day",
        textContent: from === today ? `${dayName.format(from)} (today)` : dayName.format(from),
        title: day,
      });
      const value = document.createElement("data");
      value.dataset.metric = "daily_unique_users";
      value.dataset.day = day;
      if (answer.status === "fulfilled") {
        const body = JSON.parse(answer.value);
        value.value = String(body.unique_users);
        value.textContent = `${body.exact ? "" : "\u2248 "}${number.format(body.unique_users)}`;
        if (!body.exact) value.title = "an estimate (HyperLogLog, about 0.81% standard error)";
      } else {
        value.value = "";
        value.textContent = NO_VALUE;
        value.title = state.uniquesMissing
          ? "this server does not answer GET /analytics/uniques"
          : answer.reason.message;
      }
      li.append(label, value);
      list.append(li);
    });
    $("#uniques").replaceWith(list);
  }

  // -- the read token -----------------------------------------------------------------------

  function askToken() {
    state.asking = true;
    const form = $("#token-form");
    $("#token-why").textContent = state.token
      ? "that token was refused: enter the read token"
      : "this server asks for one to show its numbers";
    form.hidden = false;
    $("#status").dataset.state = "token";
    $("#status").textContent = "waiting for the read token";
    $("#token").focus();
  }

  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault(); // nothing is sent anywhere but in the Authorization header
    const token = $("#token").value.trim();
    if (!token) return;
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("#token").value = "";
    $("#token-form").hidden = true;
    state.asking = false;
    state.tick = 0;
    state.uniquesAt = null; // read again with the token
    refresh();
  });

  async function refresh() {
    if (document.hidden || state.asking) return; // nobody is looking, or no token yet
    try {
      const stale = await readNow();
      if (stale || state.tick % RANGE_EVERY === 0) await readRange();
      if (uniquesDue()) await readUniques();
      state.tick += 1;
      draw();
      showFirstEventHint();
      showStatus(null);
    } catch (error) {
      if (error instanceof Unauthorized) askToken();
      else showStatus(error);
    }
  }

  async function loop() {
    await refresh();
    setTimeout(loop, NOW_EVERY_MS);
  }

  function chooseRange(hours) {
    state.hours = hours;
    state.tick = 0; // read the new range on the next refresh
    $("#range-label").textContent = RANGES[hours];
    for (const b of document.querySelectorAll(".ranges button")) {
      b.setAttribute("aria-pressed", String(Number(b.dataset.hours) === hours));
    }
    makeChart(); // points on or off with the range
    refresh();
  }

  for (const b of document.querySelectorAll(".ranges button")) {
    b.addEventListener("click", () => chooseRange(Number(b.dataset.hours)));
  }
  $("#scale").addEventListener("click", () => {
    state.log = !state.logShown; // the user's choice from now on
    makeChart();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });
  new ResizeObserver(() => state.chart && state.chart.setSize(chartSize())).observe($("#chart"));
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", makeChart);
  loop();
})();
