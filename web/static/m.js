/* The cadre's phone pages: entries made here (contact attempts, bookings, refusal
 * registrations) are kept on the phone (IndexedDB) until the server has taken them, so a
 * form sent without a network is never lost; each carries a key of its own, which the server
 * takes once. Changes to what exists (moving or cancelling an appointment) and revealing a
 * number need the network. Plain ES2017. */
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
    banner.querySelector('.refused').hidden = failed.length === 0;
    banner.querySelector('.refused-count').textContent = String(failed.length);
    var list = banner.querySelector('.failed');
    list.textContent = '';
    failed.forEach(function (entry) {
      var item = document.createElement('li');
      item.setAttribute('data-testid', 'sync-failed');
      var text = document.createElement('span');
      text.textContent = entry.label + '：' + entry.reason;
      item.appendChild(text);
      if (entry.fix) {
        var fix = document.createElement('a');
        fix.href = entry.fix;
        fix.textContent = '修改';
        fix.addEventListener('click', function (event) {
          event.preventDefault();
          remove(entry.key).then(function () { window.location.href = entry.fix; });
        });
        item.appendChild(fix);
      }
      var drop = document.createElement('button');
      drop.type = 'button';
      drop.textContent = '删除';
      drop.addEventListener('click', function () {
        remove(entry.key).then(refresh);
      });
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

  /* Keeps an entry on the phone and tries to send what waits. */
  function enqueue(kind, path, label, body, fix, madeAt) {
    var entry = {
      key: body.client_key,
      kind: kind,
      path: path,
      label: label,
      made_at: madeAt || new Date().toISOString(),
      state: 'waiting',
      body: body,
      fix: fix || null
    };
    return put(entry).then(flush);
  }

  /* A JSON request to the API with the session cookie and the page's anti-forgery token;
   * answers { status, body } or, without a network, rejects. */
  function send(method, path, body) {
    return fetch(path, {
      method: method,
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (answer) {
        return { status: response.status, ok: response.ok, body: answer };
      });
    });
  }

  function problemOf(answer) {
    return (answer.body && answer.body.error && answer.body.error.message) ||
      ('提交失败（' + answer.status + '）');
  }

  function fields(form) {
    var data = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (el.name && el.name !== '_csrf') data[el.name] = el.value;
    });
    return data;
  }

  Array.prototype.forEach.call(document.querySelectorAll('form[data-queue=attempt]'), function (form) {
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      var data = fields(form);
      var madeAt = new Date().toISOString();
      var body = {
        channel: data.channel,
        contact: data.contact,
        outcome: data.outcome,
        attempted_at: madeAt,
        client_key: newKey()
      };
      if (data.note && data.note.trim()) body.note = data.note.trim();
      enqueue('attempt', form.getAttribute('data-path'), form.getAttribute('data-label'), body, null, madeAt).then(function () {
        form.reset();
        var saved = form.querySelector('.saved');
        if (saved) saved.hidden = false;
      });
    });
  });

  /* The resident page remembers whom it showed, so the booking page can name them offline. */
  var NAMES = 'outreach-names';
  function names() {
    try { return JSON.parse(sessionStorage.getItem(NAMES) || '{}'); } catch (e) { return {}; }
  }
  function remember(id, name) {
    var known = names();
    known[id] = name;
    try { sessionStorage.setItem(NAMES, JSON.stringify(known)); } catch (e) { /* full: names only */ }
  }
  var shown = document.querySelector('[data-resident][data-name]');
  if (shown) remember(shown.getAttribute('data-resident'), shown.getAttribute('data-name'));

  /* Worklist: tick residents to book them together. */
  var picked = document.getElementById('picked');
  if (picked) {
    var boxes = document.querySelectorAll('[data-testid=worklist-pick]');
    var update = function () {
      var ids = [];
      Array.prototype.forEach.call(boxes, function (box) {
        if (box.checked) {
          ids.push(box.value);
          remember(box.value, box.getAttribute('data-name'));
        }
      });
      picked.hidden = ids.length === 0;
      picked.querySelector('.count').textContent = String(ids.length);
      picked.querySelector('a').href = '/m/book?r=' + ids.join(',');
    };
    Array.prototype.forEach.call(boxes, function (box) { box.addEventListener('change', update); });
    update();
  }

  /* Booking: a day of an institution for the residents in the address. Without a network
   * the booking waits on the phone; moving an appointment needs the network. */
  var book = document.getElementById('book-form');
  if (book) {
    var wanted = ((/[?&]r=([0-9,]+)/.exec(window.location.search) || [])[1] || '')
      .split(',').filter(function (id) { return id; }).map(Number);
    var list = document.getElementById('book-residents');
    var listed = Array.prototype.map.call(list.querySelectorAll('li[data-id]'), function (li) {
      return Number(li.getAttribute('data-id'));
    });
    var mode = book.getAttribute('data-mode');
    if (mode === 'book' && wanted.join(',') !== listed.join(',')) {
      /* The page kept on the phone for another group: name this one from what was seen. */
      var known = names();
      list.textContent = '';
      wanted.forEach(function (id) {
        var li = document.createElement('li');
        li.setAttribute('data-id', String(id));
        li.textContent = known[id] || ('居民 ' + id);
        list.appendChild(li);
      });
      document.getElementById('book-count').textContent = String(wanted.length);
      document.querySelector('a.back').setAttribute('href', wanted.length === 1 ? '/m/residents/' + wanted[0] : '/m/');
      Array.prototype.forEach.call(book.querySelectorAll('input[name=slot]'), function (input) {
        input.disabled = input.getAttribute('data-closed') === 'true' ||
          Number(input.getAttribute('data-remaining')) < wanted.length;
      });
    }
    /* The chosen day marked for WebViews without :has(). */
    book.addEventListener('change', function () {
      Array.prototype.forEach.call(book.querySelectorAll('label.day'), function (label) {
        label.className = label.className.replace(/ checked/g, '') +
          (label.querySelector('input:checked') ? ' checked' : '');
      });
    });
    var people = mode === 'book' ? wanted : listed;
    var bookError = book.querySelector('[data-testid=book-error]');
    var sayBook = function (text) { bookError.textContent = text; bookError.hidden = !text; };
    var back = document.querySelector('a.back');
    book.addEventListener('submit', function (event) {
      event.preventDefault();
      var slot = book.querySelector('input[name=slot]:checked');
      if (!slot) return sayBook('请选择体检机构和日期');
      if (!people.length) return sayBook('没有选择居民');
      var parts = slot.value.split('|');
      var institution = Number(parts[0]);
      var day = parts[1];
      var button = book.querySelector('[data-testid=book-submit]');
      if (mode === 'reschedule') {
        if (!navigator.onLine) return sayBook('没有网络：改约需要联网后提交');
        button.disabled = true;
        send('POST', book.getAttribute('data-path'), { day: day, institution_id: institution }).then(function (answer) {
          if (answer.ok) { window.location.href = back.getAttribute('href'); return; }
          sayBook(problemOf(answer));
          button.disabled = false;
        }, function () {
          sayBook('没有网络：改约需要联网后提交');
          button.disabled = false;
        });
        return;
      }
      var who = Array.prototype.map.call(list.querySelectorAll('li[data-id]'), function (li) {
        return li.textContent.trim().split(' ')[0];
      });
      var label = (who.length > 3 ? who.slice(0, 3).join('、') + ' 等 ' + who.length + ' 人' : who.join('、')) +
        ' 预约 ' + day;
      button.disabled = true;
      var key = newKey();
      enqueue('booking', book.getAttribute('data-path'), label, {
        institution_id: institution,
        day: day,
        resident_ids: people,
        client_key: key
      }, '/m/book?r=' + people.join(',')).then(all).then(function (entries) {
        /* Refused while the cadre is still here (the day filled up): said here, to pick again. */
        var refused = entries.filter(function (e) { return e.key === key && e.state === 'failed'; })[0];
        if (!refused) { window.location.href = back.getAttribute('href'); return null; }
        return remove(key).then(function () {
          sayBook(refused.reason);
          button.disabled = false;
          return refresh();
        });
      });
    });
  }

  /* Cancelling an appointment: online, with the reason chosen. */
  Array.prototype.forEach.call(document.querySelectorAll('form.cancel-form'), function (form) {
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      var problem = form.querySelector('.error');
      var say = function (text) { problem.textContent = text; problem.hidden = !text; };
      if (!navigator.onLine) return say('没有网络：取消预约需要联网');
      if (!window.confirm('确定取消这个预约？')) return;
      send('POST', form.getAttribute('data-path'), { reason: fields(form).reason }).then(function (answer) {
        if (answer.ok) { window.location.reload(); return; }
        say(problemOf(answer));
      }, function () { say('没有网络：取消预约需要联网'); });
    });
  });

  /* Tap to call: the full number is an audited view, asked for only when the cadre taps. */
  Array.prototype.forEach.call(document.querySelectorAll('button[data-call]'), function (button) {
    button.addEventListener('click', function () {
      var result = document.querySelector('.call-result');
      var say = function (text) { result.textContent = text; result.hidden = false; };
      send('GET', result.getAttribute('data-reveal')).then(function (answer) {
        var number = answer.ok && answer.body[button.getAttribute('data-call')];
        if (!number) return say(answer.ok ? '没有号码' : problemOf(answer));
        result.textContent = '';
        result.hidden = false;
        var link = document.createElement('a');
        link.className = 'button primary';
        link.href = 'tel:' + number;
        link.setAttribute('data-testid', 'call-link');
        link.textContent = '拨打 ' + number;
        result.appendChild(link);
      }, function () { say('没有网络：查看完整号码需要联网'); });
    });
  });

  /* The worklist's residents are kept on the phone for the day without a network: each page
   * not yet kept is fetched once, through the service worker that keeps it. */
  if (document.querySelector('[data-testid=worklist-item]') && navigator.onLine && window.caches &&
      navigator.serviceWorker && navigator.serviceWorker.controller) {
    var links = Array.prototype.map.call(
      document.querySelectorAll('[data-testid=worklist-item] > a'), function (a) { return a.getAttribute('href'); });
    var keep = function (i) {
      if (i >= links.length || !navigator.onLine) return Promise.resolve();
      return caches.match(links[i]).then(function (hit) {
        return hit ? null : fetch(links[i], { credentials: 'same-origin' })['catch'](function () { return null; });
      }).then(function () { return keep(i + 1); });
    };
    setTimeout(function () { keep(0); }, 2000);
  }

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
      var field = function (name) { return refusal.elements[name].value.trim(); };
      if (!field('signer_name')) return say('请填写签字人');
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
        },
        client_key: newKey()
      };
      if (field('reason_text')) body.reason_text = field('reason_text');
      var button = refusal.querySelector('[data-testid=refusal-submit]');
      button.disabled = true;
      say('');
      var path = refusal.getAttribute('data-path');
      var resident = path.replace(/^.*\/residents\/(\d+)\/refusals$/, '$1');
      enqueue('refusal', path, refusal.getAttribute('data-label'), body,
              '/m/residents/' + resident + '/refusal').then(function () {
        window.location.href = '/m/residents/' + resident;
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
