// The office's and the clinic's uploads, wave previews and wave progress. Plain script, no
// framework: every change it sends carries the page's anti-forgery token in X-CSRF-Token.
(function () {
  'use strict';
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute('content') : '';

  // What an answer that is not a report says: the error page's message, the API's
  // envelope, or the status.
  function problem(status, text) {
    try {
      var doc = new DOMParser().parseFromString(text, 'text/html');
      var message = doc.querySelector('[data-testid=error-message]');
      if (message) return message.textContent;
    } catch (e) {}
    try {
      return JSON.parse(text).error.message;
    } catch (e) {}
    if (status === 413) return '文件过大';
    return '上传失败（' + status + '），请重试';
  }

  function showError(box, message) {
    box.textContent = '';
    var p = document.createElement('p');
    p.className = 'error';
    p.setAttribute('role', 'alert');
    p.textContent = message;
    box.appendChild(p);
  }

  // An upload form: the chosen file goes as the request body. Its bar shows the upload,
  // then (for a streamed answer: one JSON object a line) the rows the server has read.
  function upload(form) {
    var card = form.closest('.upload');
    var bar = card.querySelector('progress');
    var status = card.querySelector('.upload-status');
    var result = card.querySelector('.upload-result');
    var streamed = form.hasAttribute('data-stream');
    var button = form.querySelector('button');
    // The share of the bar the upload takes when the server reports its own progress.
    var sending = streamed ? 30 : 90;

    form.addEventListener('submit', function (event) {
      event.preventDefault();
      var file = form.querySelector('input[type=file]').files[0];
      if (!file) return;
      result.textContent = '';
      bar.max = 100;
      bar.value = 0;
      bar.parentNode.hidden = false;
      status.textContent = '正在上传…';
      button.disabled = true;
      var xhr = new XMLHttpRequest();
      var seen = 0;
      var finished = false;
      xhr.open('POST', form.getAttribute('data-action'));
      xhr.setRequestHeader('X-CSRF-Token', csrf);
      xhr.setRequestHeader('Content-Type', 'application/octet-stream');
      xhr.upload.onprogress = function (e) {
        if (e.lengthComputable) {
          bar.value = (sending * e.loaded) / e.total;
          status.textContent = '正在上传… ' + Math.round((100 * e.loaded) / e.total) + '%';
        }
      };
      xhr.upload.onload = function () {
        bar.value = sending;
        status.textContent = '已上传，正在处理…';
      };
      function line(text) {
        var item;
        try {
          item = JSON.parse(text);
        } catch (e) {
          return;
        }
        if (item.stage === 'reading') {
          var share = item.total > 0 ? item.bytes / item.total : 0;
          bar.value = Math.max(bar.value, sending + (95 - sending) * share);
          status.textContent = item.finished
            ? '已读取 ' + item.rows + ' 行，正在写入…'
            : '已读取 ' + item.rows + ' 行…';
        } else if (item.stage === 'done') {
          finished = true;
          bar.value = bar.max;
          status.textContent = item.ok ? '导入完成' : '导入失败';
          result.innerHTML = item.html;
        }
      }
      function take() {
        var text = xhr.responseText;
        var end;
        while ((end = text.indexOf('\n', seen)) >= 0) {
          line(text.slice(seen, end));
          seen = end + 1;
        }
      }
      xhr.onprogress = function () {
        if (streamed && xhr.status === 200) take();
      };
      xhr.onload = function () {
        button.disabled = false;
        if (streamed && xhr.status === 200) {
          take();
          if (!finished) showError(result, '连接中断，导入结果未知，请刷新页面查看名单');
          return;
        }
        var type = xhr.getResponseHeader('Content-Type') || '';
        // A report fragment (also for a file refused whole) or a page / envelope saying why.
        if (!streamed && type.indexOf('text/html') === 0 && xhr.responseText.indexOf('<html') < 0) {
          bar.value = bar.max;
          status.textContent = xhr.status === 200 ? '导入完成' : '导入失败';
          result.innerHTML = xhr.responseText;
          return;
        }
        status.textContent = '导入失败';
        showError(result, problem(xhr.status, xhr.responseText));
      };
      xhr.onerror = function () {
        button.disabled = false;
        status.textContent = '导入失败';
        showError(result, '网络中断，请重试');
      };
      xhr.send(file);
    });
  }

  document.querySelectorAll('form.upload-form').forEach(upload);

  // Forms that ask before they change something that cannot be undone.
  document.querySelectorAll('form[data-confirm]').forEach(function (form) {
    form.addEventListener('submit', function (event) {
      if (!window.confirm(form.getAttribute('data-confirm'))) event.preventDefault();
    });
  });

  // The new-wave form: its preview follows the fields.
  var waveForm = document.getElementById('wave-form');
  if (waveForm) {
    var timer = null;
    var asked = 0;
    var refresh = function () {
      var data = new FormData(waveForm);
      data.delete('_csrf');
      var query = new URLSearchParams(data).toString();
      var mine = ++asked;
      fetch(waveForm.getAttribute('data-preview') + '?' + query, { credentials: 'same-origin' })
        .then(function (r) {
          return r.ok ? r.json() : null;
        })
        .then(function (p) {
          if (!p || mine !== asked) return;
          document.querySelector('[data-testid=wave-preview]').textContent = p.text;
          document.querySelector('[data-testid=wave-segments]').textContent = p.segments;
          document.querySelector('[data-preview-max]').textContent = p.max_segments;
          document.querySelector('[data-preview-resident]').textContent = p.resident
            ? '示例居民：' + p.resident
            : '受众中暂无居民，以示例姓名预览';
        })
        .catch(function () {});
    };
    var later = function () {
      clearTimeout(timer);
      timer = setTimeout(refresh, 300);
    };
    waveForm.addEventListener('input', later);
    waveForm.addEventListener('change', later);
    document.querySelectorAll('[form=wave-form]').forEach(function (field) {
      field.addEventListener('change', later);
    });
  }

  // A wave's page: its figures follow the API while messages wait.
  var progress = document.getElementById('wave-progress');
  if (progress) {
    var id = progress.getAttribute('data-wave-id');
    var WAITING = ['scheduled', 'queued', 'sending'];
    var LABELS = { planned: '未开始', sending: '发送中', done: '已完成', cancelled: '已取消' };
    var polls = 0;
    var poll = function () {
      fetch('/api/v1/waves/' + id, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
        .then(function (r) {
          return r.ok ? r.json() : null;
        })
        .then(function (wave) {
          if (!wave) return;
          var waiting = 0;
          Object.keys(wave.states).forEach(function (state) {
            if (WAITING.indexOf(state) >= 0) waiting += wave.states[state];
          });
          document.querySelectorAll('#wave-progress [data-state]').forEach(function (cell) {
            var n = wave.states[cell.getAttribute('data-state')] || 0;
            cell.querySelector('dd').textContent = n;
            cell.classList.toggle('zero', n === 0);
          });
          var bar = progress.querySelector('progress');
          bar.max = Math.max(wave.planned, 1);
          bar.value = wave.planned > 0 ? wave.planned - waiting : 0;
          document.querySelector('[data-testid=wave-planned]').textContent = wave.planned;
          progress.querySelector('[data-handled]').textContent = wave.planned - waiting;
          var state = document.querySelector('[data-testid=wave-state]');
          state.textContent = LABELS[wave.status] || wave.status;
          state.setAttribute('data-status', wave.status);
          state.className = 'badge wave-' + wave.status;
          polls += 1;
          progress.setAttribute('data-polls', String(polls));
          progress.querySelector('[data-refreshed]').textContent =
            '更新于 ' + new Date().toLocaleTimeString('zh-CN', { hour12: false });
          // Often while messages go; now and then while the wave waits for its send time.
          var due = Date.parse(wave.send_at) - Date.now();
          if (wave.status === 'sending' || (wave.status === 'planned' && due < 60000)) {
            setTimeout(poll, 3000);
          } else if (wave.status === 'planned') {
            setTimeout(poll, 60000);
          }
        })
        .catch(function () {
          setTimeout(poll, 10000);
        });
    };
    poll();
  }
})();
