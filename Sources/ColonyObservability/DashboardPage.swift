/// The dashboard's page: one self-contained HTML file (no outside scripts, fonts or styles),
/// kept in the binary. It opens `api/events` and redraws from each status it receives.
enum DashboardPage {
    static let html = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Colony manager</title>
        <style>
          :root { --ink: #1d2733; --muted: #6b7785; --line: #dfe4ea; --accent: #2f7d5b; --accent2: #c0702d; --bad: #b23b3b; }
          * { box-sizing: border-box; }
          body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--ink); background: #f6f8fa; }
          header { display: flex; align-items: baseline; gap: 1.5em; padding: 0.8em 1.5em; background: #1d2733; color: #fff; }
          header h1 { font-size: 1.2em; margin: 0; }
          header .state { color: #9fe0bf; }
          header .state.lost { color: #ffb3b3; }
          main { padding: 1em 1.5em; display: grid; gap: 1em; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); }
          section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 0.8em 1em; overflow-x: auto; min-width: 0; }
          section.wide { grid-column: 1 / -1; }
          h2 { font-size: 1em; margin: 0 0 0.6em; }
          .figures { display: flex; flex-wrap: wrap; gap: 1.5em; }
          .figure b { display: block; font-size: 1.5em; }
          .figure span { color: var(--muted); }
          table { width: 100%; border-collapse: collapse; }
          th, td { text-align: left; padding: 0.25em 0.5em; border-bottom: 1px solid var(--line); white-space: nowrap; }
          th { color: var(--muted); font-weight: 600; }
          td.number, th.number { text-align: right; font-variant-numeric: tabular-nums; }
          .bar { position: relative; height: 1.1em; background: #e8edf1; border-radius: 3px; overflow: hidden; min-width: 160px; }
          .bar i { position: absolute; left: 0; top: 0; bottom: 0; background: var(--accent); }
          .bar i.failed { background: var(--bad); }
          .muted { color: var(--muted); }
          canvas { width: 100%; height: 160px; }
          .legend span { margin-right: 1em; }
          .legend .requests { color: var(--accent); }
          .legend .tasks { color: var(--accent2); }
        </style>
        </head>
        <body>
        <header>
          <h1>Colony manager</h1>
          <span id="version" class="muted"></span>
          <span id="connection" class="state">connecting…</span>
        </header>
        <main>
          <section class="wide">
            <h2>Overview</h2>
            <div class="figures">
              <div class="figure"><b id="uptime">–</b><span>uptime</span></div>
              <div class="figure"><b id="session-count">–</b><span>sessions</span></div>
              <div class="figure"><b id="request-rate">–</b><span>requests/s</span></div>
              <div class="figure"><b id="task-rate">–</b><span>pool calls/s</span></div>
              <div class="figure"><b id="object-count">–</b><span>objects</span></div>
              <div class="figure"><b id="memory">–</b><span>memory held</span></div>
              <div class="figure"><b id="persist">–</b><span>persistence</span></div>
            </div>
          </section>
          <section class="wide">
            <h2>Rates over the last minutes</h2>
            <div class="legend"><span class="requests">■ requests/s</span><span class="tasks">■ pool calls/s</span></div>
            <canvas id="chart" width="1200" height="160"></canvas>
          </section>
          <section class="wide">
            <h2>Pool jobs</h2>
            <table id="jobs"><thead><tr><th>Pool</th><th>Job</th><th>Task</th><th>Progress</th><th class="number">Done</th><th class="number">Rate/s</th><th class="number">Failed</th><th class="number">Retried</th></tr></thead><tbody></tbody></table>
          </section>
          <section>
            <h2>Worker nodes</h2>
            <table id="workers"><thead><tr><th>Pool</th><th>Node</th><th class="number">Processes</th><th class="number">Busy</th><th class="number">Tasks done</th></tr></thead><tbody></tbody></table>
          </section>
          <section>
            <h2>Sessions</h2>
            <table id="sessions"><thead><tr><th>Id</th><th>Role</th><th>Peer</th><th class="number">Requests</th><th class="number">Objects</th></tr></thead><tbody></tbody></table>
          </section>
          <section class="wide">
            <h2>Objects <span id="objects-note" class="muted"></span></h2>
            <table id="objects"><thead><tr><th>Id</th><th>Type</th><th>Name</th><th class="number">Size</th><th class="number">Waiting</th><th class="number">Holders</th></tr></thead><tbody></tbody></table>
          </section>
        </main>
        <script>
        "use strict";
        const history = [];          // {time, requests, tasks}: one per status, the last 5 minutes
        const jobSeen = new Map();   // job key -> {time, done}, for each job's rate
        let previous = null;

        function text(value) { return value === null || value === undefined ? "–" : String(value); }
        function cell(value, number) {
          const td = document.createElement("td");
          td.textContent = text(value);
          if (number) td.className = "number";
          return td;
        }
        function fill(id, rows) {
          const body = document.querySelector("#" + id + " tbody");
          body.replaceChildren(...rows);
        }
        function row(values, numbers, attributes) {
          const tr = document.createElement("tr");
          values.forEach((value, index) => tr.appendChild(value instanceof Node ? wrap(value) : cell(value, numbers.includes(index))));
          for (const [key, value] of Object.entries(attributes || {})) tr.setAttribute(key, value);
          return tr;
        }
        function wrap(node) { const td = document.createElement("td"); td.appendChild(node); return td; }
        function duration(seconds) {
          seconds = Math.floor(seconds);
          const h = Math.floor(seconds / 3600), m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
          return (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s";
        }
        function bytes(count) {
          const units = ["B", "KiB", "MiB", "GiB", "TiB"];
          let index = 0;
          while (count >= 1024 && index < units.length - 1) { count /= 1024; index++; }
          return count.toFixed(index ? 1 : 0) + " " + units[index];
        }
        function bar(done, failed, total) {
          const outer = document.createElement("div");
          outer.className = "bar";
          const whole = total || Math.max(done + failed, 1);
          const ok = document.createElement("i");
          ok.style.width = (100 * (done - failed) / whole) + "%";
          const bad = document.createElement("i");
          bad.className = "failed";
          bad.style.left = ok.style.width;
          bad.style.width = (100 * failed / whole) + "%";
          outer.append(ok, bad);
          return outer;
        }

        function draw() {
          const canvas = document.getElementById("chart");
          const context = canvas.getContext("2d");
          const width = canvas.width, height = canvas.height;
          context.clearRect(0, 0, width, height);
          const points = [];
          for (let index = 1; index < history.length; index++) {
            const span = history[index].time - history[index - 1].time;
            if (span <= 0) continue;
            points.push({
              time: history[index].time,
              requests: Math.max(0, history[index].requests - history[index - 1].requests) / span,
              tasks: Math.max(0, history[index].tasks - history[index - 1].tasks) / span,
            });
          }
          if (points.length < 2) return;
          const start = points[0].time, end = points[points.length - 1].time;
          const top = Math.max(1, ...points.map(p => Math.max(p.requests, p.tasks))) * 1.1;
          context.strokeStyle = "#dfe4ea";
          context.fillStyle = "#6b7785";
          context.font = "11px sans-serif";
          context.beginPath(); context.moveTo(0, height - 0.5); context.lineTo(width, height - 0.5); context.stroke();
          context.fillText(Math.round(top) + "/s", 4, 12);
          for (const [key, color] of [["requests", "#2f7d5b"], ["tasks", "#c0702d"]]) {
            context.strokeStyle = color;
            context.lineWidth = 2;
            context.beginPath();
            points.forEach((point, index) => {
              const x = (point.time - start) / Math.max(1, end - start) * (width - 2) + 1;
              const y = height - 2 - point[key] / top * (height - 16);
              if (index === 0) context.moveTo(x, y); else context.lineTo(x, y);
            });
            context.stroke();
          }
        }

        function show(status) {
          const now = Date.now() / 1000;
          const sessions = status.sessions || [];
          const pools = status.pools || [];
          const requests = sessions.reduce((sum, s) => sum + (s.requests || 0), 0) + (status.counters?.requests_of_closed_sessions || 0);
          const tasks = pools.reduce((sum, p) => sum + (p.done || 0), 0);
          history.push({ time: now, requests, tasks });
          while (history.length > 1 && now - history[0].time > 300) history.shift();
          const last = history.length > 1 ? history[history.length - 2] : null;
          const span = last ? now - last.time : 0;
          document.getElementById("version").textContent = "version " + text(status.version);
          document.getElementById("uptime").textContent = duration(status.uptime || 0);
          document.getElementById("session-count").textContent = sessions.length;
          document.getElementById("request-rate").textContent = span > 0 ? Math.round(Math.max(0, requests - last.requests) / span) : "–";
          document.getElementById("task-rate").textContent = span > 0 ? Math.round(Math.max(0, tasks - last.tasks) / span) : "–";
          document.getElementById("object-count").textContent = text(status.objects_total);
          document.getElementById("memory").textContent = status.memory ? bytes(status.memory.used) + " of " + bytes(status.memory.limit) : "–";
          document.getElementById("persist").textContent = status.persistence ? status.persistence.mode + (status.persistence.failure ? " (FAILING)" : "") : "off";

          const jobRows = [], workerRows = [];
          for (const pool of pools) {
            const poolName = pool.name || ("#" + pool.id);
            for (const job of pool.job_progress || []) {
              const key = pool.id + ":" + job.id;
              const seen = jobSeen.get(key);
              const rate = seen && now > seen.time ? Math.round(Math.max(0, job.done - seen.done) / (now - seen.time)) : null;
              jobSeen.set(key, { time: now, done: job.done });
              const total = job.total === null ? job.received + "+" : job.total;
              jobRows.push(row(
                [poolName, job.id, job.task, bar(job.done, job.failed, job.total), job.done + " / " + total, rate, job.failed, job.retried],
                [4, 5, 6, 7], { "data-job": job.id, "data-done": job.done }));
            }
            for (const worker of pool.workers || []) {
              workerRows.push(row([poolName, worker.node + " (pid " + worker.pid + ")", worker.processes, worker.busy, worker.done], [2, 3, 4]));
            }
          }
          if (jobRows.length === 0) jobRows.push(row(["no jobs running"], []));
          fill("jobs", jobRows);
          fill("workers", workerRows);
          fill("sessions", sessions.map(s => row([s.id, s.role, s.peer, s.requests, s.objects], [3, 4])));
          const objects = status.objects || [];
          fill("objects", objects.map(o => row([o.id, o.type, o.name, o.size, o.waiting, o.refs], [3, 4, 5], { "data-name": o.name || "" })));
          document.getElementById("objects-note").textContent =
            status.objects_total > objects.length ? "(first " + objects.length + " of " + status.objects_total + ")" : "";
          draw();
        }

        const source = new EventSource("api/events");
        source.onmessage = event => {
          document.getElementById("connection").textContent = "live";
          document.getElementById("connection").className = "state";
          show(JSON.parse(event.data));
        };
        source.onerror = () => {
          document.getElementById("connection").textContent = "reconnecting…";
          document.getElementById("connection").className = "state lost";
        };
        </script>
        </body>
        </html>
        """
}
