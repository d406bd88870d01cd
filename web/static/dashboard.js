// The office dashboard: draws the daily series the page carries as JSON (uPlot), and on the
// stage list asks the API for a resident's full numbers (an audited reveal) when asked to.
(function () {
  'use strict';

  var COLOURS = ['#8a98a6', '#f0a202', '#0b63c5', '#7b4fd1', '#1d8a48', '#b3261e'];

  function chart() {
    var holder = document.getElementById('series-chart');
    var source = document.getElementById('series-data');
    if (!holder || !source || typeof window.uPlot !== 'function') return;
    var data;
    try {
      data = JSON.parse(source.textContent);
    } catch (e) {
      return;
    }
    if (!data.days || data.days.length === 0) {
      holder.textContent = '还没有按日数据';
      holder.classList.add('empty');
      return;
    }
    // Days as Unix seconds at midnight UTC: the axis shows the calendar day as written.
    var xs = data.days.map(function (d) {
      var p = d.split('-');
      return Date.UTC(+p[0], +p[1] - 1, +p[2]) / 1000;
    });
    var series = [{ label: '日期', value: function (u, v) { return v == null ? '' : day(v); } }];
    var columns = [xs];
    data.lines.forEach(function (line, i) {
      series.push({ label: line.label, stroke: COLOURS[i % COLOURS.length], width: 2, points: { show: xs.length <= 14 } });
      columns.push(line.values);
    });
    var size = function () {
      return { width: Math.max(280, holder.clientWidth), height: holder.clientWidth < 500 ? 220 : 300 };
    };
    var plot = new window.uPlot(
      Object.assign(size(), {
        tzDate: function (ts) { return window.uPlot.tzDate(new Date(ts * 1000), 'UTC'); },
        series: series,
        axes: [
          {
            // Whole days only, written as MM-DD.
            incrs: [86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400, 91 * 86400],
            values: function (u, splits) { return splits.map(function (s) { return day(s).slice(5); }); },
          },
          { size: 60 },
        ],
        scales: {
          // One day alone would fill the width: show it among the days around it.
          x: { time: true, range: function (u, min, max) { return xs.length === 1 ? [xs[0] - 3 * 86400, xs[0] + 3 * 86400] : [min, max]; } },
          y: { range: function (u, min, max) { return [0, max > 0 ? Math.ceil(max * 1.1) : 1]; } },
        },
        legend: { live: true },
      }),
      columns,
      holder,
    );
    holder.dataset.drawn = 'true';
    var pending;
    window.addEventListener('resize', function () {
      clearTimeout(pending);
      pending = setTimeout(function () { plot.setSize(size()); }, 150);
    });
  }

  function day(seconds) {
    return new Date(seconds * 1000).toISOString().slice(0, 10);
  }

  function reveal() {
    var error = document.querySelector('[data-testid=reveal-error]');
    document.addEventListener('click', function (event) {
      var button = event.target.closest('[data-reveal]');
      if (!button) return;
      var row = button.closest('tr');
      button.disabled = true;
      // A GET with the session cookie: the API audits the view of the full numbers.
      fetch('/api/v1/residents/' + encodeURIComponent(button.dataset.reveal) + '?reveal=true', {
        credentials: 'same-origin',
        headers: { accept: 'application/json' },
      })
        .then(function (response) {
          return response.json().then(function (body) {
            if (!response.ok) throw new Error((body && body.error && body.error.message) || '无法显示号码');
            return body;
          });
        })
        .then(function (resident) {
          row.querySelector('.id-number').textContent = resident.id_number;
          row.querySelector('.phone').textContent = resident.phone || '—';
          button.textContent = '已显示';
          if (error) error.hidden = true;
        })
        .catch(function (e) {
          button.disabled = false;
          if (error) {
            error.textContent = e.message || '无法显示号码';
            error.hidden = false;
          }
        });
    });
  }

  chart();
  reveal();
})();
