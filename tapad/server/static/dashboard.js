// tapad dashboard: the current hour from GET /analytics every second, the last 24 hours,
// 48 hours or 7 days from GET /analytics/hours every few seconds, drawn with uPlot.
// Nothing but this server is asked; nothing is built: this file is served as it is.
"use strict";

(() => {
  const MS_PER_HOUR = 3600000;
  const NOW_EVERY_MS = 1000; // the current hour: the contract asks for at least every 2 s
  const RANGE_EVERY = 5; // the chart's range is read again every 5th refresh
  const TIMEOUT_MS = 5000;
  const RANGES = { 24: "24 hours", 48: "48 hours", 168: "7 days" };

  const number = new Intl.NumberFormat();
  const compact = new Intl.NumberFormat(undefined, { notation: "compact" });
  const percent = new Intl.NumberFormat(undefined, {
    style: "percent",
    minimumFractionDigits: 2,
    maximumFractionDigits: 2,
  });
  const clock = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });

  const $ = (selector) => document.querySelector(selector);
  const state = { hours: 24, rows: [], chart: null, tick: 0, failingSince: null };

  const hourStart = (ms) => ms - (ms % MS_PER_HOUR);
  const hourLabel = (ms) => new Date(ms).toISOString().slice(0, 13); // YYYY-MM-DDTHH, UTC
  const ctr = (clicks, impressions) => (impressions > 0 ? clicks / impressions : null);
  const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  async function getText(url) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const response = await fetch(url, { cache: "no-store", signal: abort.signal });
      const text = await response.text();
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
    const at = clock.format(new Date());
    if (error) {
      state.failingSince ??= at;
      el.dataset.state = "error";
      el.textContent = `server not answering since ${state.failingSince} (${error.message}); still trying`;
    } else {
      state.failingSince = null;
      el.dataset.state = "ok";
      el.textContent = `last refreshed ${at} · server answered`;
    }
  }

  // -- the chart and the table ------------------------------------------------------------

  function chartData() {
    const rows = state.rows;
    return [
      rows.map((r) => r.timestamp / 1000),
      rows.map((r) => r.unique_users),
      rows.map((r) => r.clicks),
      rows.map((r) => r.impressions),
    ];
  }

  function chartSize() {
    const el = $("#chart");
    const width = Math.max(el.clientWidth - 8, 200);
    return { width, height: width < 520 ? 240 : 320 };
  }

  function makeChart() {
    if (state.chart) state.chart.destroy();
    const text = cssVar("--muted");
    const grid = cssVar("--grid");
    const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    // The legend shows the hour under the cursor, or the newest hour when there is none.
    const at = (u, sidx, idx) => u.data[sidx][idx ?? u.data[sidx].length - 1];
    const line = (label, colour) => ({
      label,
      stroke: colour,
      width: 2,
      points: { show: state.hours <= 48, size: 5, fill: colour },
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
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max * 1.1, 1)] } },
        series: [
          {
            label: "Hour (UTC)",
            value: (u, ts, sidx, idx) => {
              const shown = at(u, 0, idx);
              return shown == null ? "–" : hourLabel(shown * 1000);
            },
          },
          line("Unique users", cssVar("--users")),
          line("Clicks", cssVar("--clicks")),
          line("Impressions", cssVar("--impressions")),
        ],
        axes: [
          { ...axis, values: hourTicks },
          { ...axis, size: 56, values: (u, vals) => vals.map((v) => compact.format(v)) },
        ],
        cursor: { points: { size: 7 } },
      },
      chartData(),
      $("#chart"),
    );
  }

  function draw() {
    const data = chartData();
    if (!state.chart) makeChart();
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
      for (const cell of [
        r.hour,
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

  async function refresh() {
    if (document.hidden) return; // nobody is looking: ask nothing
    try {
      const stale = await readNow();
      if (stale || state.tick % RANGE_EVERY === 0) await readRange();
      state.tick += 1;
      draw();
      showStatus(null);
    } catch (error) {
      showStatus(error);
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
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });
  new ResizeObserver(() => state.chart && state.chart.setSize(chartSize())).observe($("#chart"));
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", makeChart);
  loop();
})();
