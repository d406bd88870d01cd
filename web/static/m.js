/* The cadre's phone pages: entries made here (contact attempts) are kept on the phone
 * (IndexedDB) until the server has taken them, so a form sent without a network is never
 * lost; each carries a key of its own, which the server takes once. Plain ES2017. */
(function () {
  'use strict';

  var DB_NAME = 'outreach-queue';
  var STORE = 'entries';
  var PAGE_CACHE = 'outreach-m-v1';
  var csrfMeta = document.querySelector('meta[name=csrf-token]');
  var csrf = csrfMeta ? csrfMeta.content : '';
  var flushing = false;

  function openDb() {
    return new Promise(function (resolve, reject) {
      var request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = function () {
        request.result.createObjectStore(STORE, { keyPath: 'key' });
      };
      request.onsuccess = function () { resolve(request.result); };
      request.onerror = function () { reject(request.error); };
    });
  }

  function withStore(mode, work) {
    return openDb().then(function (db) {
      return new Promise(function (resolve, reject) {
        var tx = db.transaction(STORE, mode);
        var result;
        tx.oncomplete = function () { db.close(); resolve(result); };
        tx.onerror = function () { db.close(); reject(tx.error); };
        work(tx.objectStore(STORE), function (value) { result = value; });
      });
    });
  }

  function all() {
    return withStore('readonly', function (store, done) {
      var request = store.getAll();
      request.onsuccess = function () {
        done(request.result.sort(function (a, b) { return a.made_at < b.made_at ? -1 : 1; }));
      };
    });
  }

  function put(entry) {
    return withStore('readwrite', function (store) { store.put(entry); });
  }

  function remove(key) {
    return withStore('readwrite', function (store) { store['delete'](key); });
  }

  function clearAll() {
    return withStore('readwrite', function (store) { store.clear(); });
  }

  /* 128 random bits as hex: works where crypto.randomUUID does not (plain http). */
  function newKey() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) {
      return ('0' + b.toString(16)).slice(-2);
    }).join('');
  }

  function render(entries) {
    var banner = document.querySelector('[data-testid=sync-pending]');
    if (!banner) return;
    var waiting = entries.filter(function (e) { return e.state === 'waiting'; });
    var failed = entries.filter(function (e) { return e.state === 'failed'; });
    banner.hidden = entries.length === 0;
    banner.querySelector('.count').textContent = String(waiting.length);
    banner.querySelector('.offline').hidden = navigator.onLine;
    var list = banner.querySelector('.failed');
    list.textContent = '';
    failed.forEach(function (entry) {
      var item = document.createElement('li');
      item.setAttribute('data-testid', 'sync-failed');
      var text = document.createElement('span');
      text.textContent = entry.label + '：' + entry.reason;
      var drop = document.createElement('button');
      drop.type = 'button';
      drop.textContent = '删除';
      drop.addEventListener('click', function () {
        remove(entry.key).then(refresh);
      });
      item.appendChild(text);
      item.appendChild(drop);
      list.appendChild(item);
    });
  }

  function refresh() {
    return all().then(render);
  }

  /* Sends what waits, oldest first; stops at the first entry the network or server could
   * not take now, and keeps it. An entry the server refuses is kept with the reason. */
  function flush() {
    if (flushing || !navigator.onLine) return refresh();
    flushing = true;
    return all().then(function (entries) {
      var waiting = entries.filter(function (e) { return e.state === 'waiting'; });
      var next = function (i) {
        if (i >= waiting.length) return Promise.resolve();
        var entry = waiting[i];
        return fetch(entry.path, {
          method: 'POST',
          credentials: 'same-origin',
          headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
          body: JSON.stringify(entry.body)
        }).then(function (response) {
          if (response.ok) return remove(entry.key).then(function () { return next(i + 1); });
          if (response.status === 401 || response.status === 408 || response.status === 429 ||
              response.status >= 500) {
            return null;
          }
          return response.json().catch(function () { return {}; }).then(function (body) {
            entry.state = 'failed';
            entry.reason = (body && body.error && body.error.message) || ('错误 ' + response.status);
            return put(entry).then(function () { return next(i + 1); });
          });
        }, function () { return null; });
      };
      return next(0);
    }).then(function () { flushing = false; return refresh(); },
            function () { flushing = false; return refresh(); });
  }

  function queueForm(form) {
    var data = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (el.name && el.name !== '_csrf') data[el.name] = el.value;
    });
    var key = newKey();
    var madeAt = new Date().toISOString();
    var body = {
      channel: data.channel,
      contact: data.contact,
      outcome: data.outcome,
      attempted_at: madeAt,
      client_key: key
    };
    if (data.note && data.note.trim()) body.note = data.note.trim();
    var entry = {
      key: key,
      kind: form.getAttribute('data-queue'),
      path: form.getAttribute('data-path'),
      label: form.getAttribute('data-label'),
      made_at: madeAt,
      state: 'waiting',
      body: body
    };
    return put(entry).then(function () {
      form.reset();
      var saved = form.querySelector('.saved');
      if (saved) saved.hidden = false;
      return flush();
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll('form[data-queue]'), function (form) {
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      queueForm(form);
    });
  });

  var logout = document.querySelector('form[action="/logout"]');
  if (logout) {
    logout.addEventListener('submit', function (event) {
      event.preventDefault();
      all().then(function (entries) {
        if (entries.length && !window.confirm('还有 ' + entries.length + ' 条记录没有上传，退出后会丢失。确定退出？')) {
          return;
        }
        var clearing = [clearAll()];
        if (window.caches) clearing.push(caches['delete'](PAGE_CACHE));
        Promise.all(clearing).then(function () { logout.submit(); }, function () { logout.submit(); });
      });
    });
  }

  /* The refusal form: the signature drawn on the pad goes as its strokes, in the canvas's
   * CSS pixels, as the API takes them. It needs a network: the page says so without one. */
  var refusal = document.getElementById('refusal-form');
  if (refusal && window.SignaturePad) {
    var canvas = refusal.querySelector('canvas');
    var pad = new window.SignaturePad(canvas, { minWidth: 1, maxWidth: 3, penColor: '#000' });
    var fit = function () {
      var ratio = Math.max(window.devicePixelRatio || 1, 1);
      var drawn = pad.toData();
      canvas.width = canvas.offsetWidth * ratio;
      canvas.height = canvas.offsetHeight * ratio;
      canvas.getContext('2d').scale(ratio, ratio);
      pad.clear();
      pad.fromData(drawn);
    };
    window.addEventListener('resize', fit);
    fit();
    refusal.querySelector('.clear-pad').addEventListener('click', function () { pad.clear(); });
    var problem = refusal.querySelector('[data-testid=refusal-error]');
    var say = function (text) { problem.textContent = text; problem.hidden = !text; };
    pad.addEventListener('endStroke', function () { say(''); });
    refusal.addEventListener('submit', function (event) {
      event.preventDefault();
      if (pad.isEmpty()) return say('请在签字框内签字');
      if (!navigator.onLine) return say('没有网络：拒检登记需要联网后提交');
      var field = function (name) { return refusal.elements[name].value.trim(); };
      var body = {
        reason: field('reason'),
        signer_name: field('signer_name'),
        signer_relation: field('signer_relation'),
        signature_strokes: {
          width: Math.round(canvas.offsetWidth),
          height: Math.round(canvas.offsetHeight),
          strokes: pad.toData().map(function (group) {
            return group.points.map(function (p) { return [Math.round(p.x), Math.round(p.y)]; });
          })
        }
      };
      if (field('reason_text')) body.reason_text = field('reason_text');
      var button = refusal.querySelector('[data-testid=refusal-submit]');
      button.disabled = true;
      say('');
      fetch(refusal.getAttribute('data-path'), {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
        body: JSON.stringify(body)
      }).then(function (response) {
        if (response.ok) {
          window.location.href = refusal.getAttribute('data-path').replace(/^.*\/residents\/(\d+)\/refusals$/, '/m/residents/$1');
          return null;
        }
        return response.json().catch(function () { return {}; }).then(function (answer) {
          say((answer.error && answer.error.message) || ('提交失败（' + response.status + '）'));
          button.disabled = false;
        });
      }, function () {
        say('没有网络：拒检登记需要联网后提交');
        button.disabled = false;
      });
    });
  }

  if ('serviceWorker' in navigator && window.isSecureContext) {
    navigator.serviceWorker.register('/m/sw.js', { scope: '/m/' });
  }
  window.addEventListener('online', flush);
  window.addEventListener('offline', refresh);
  setInterval(flush, 30000);
  flush();
})();
