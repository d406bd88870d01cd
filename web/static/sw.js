/* The cadre pages' service worker: the pages under /m/ from the network when there is one
 * (kept as last seen), from the phone when there is not; the styles and scripts from the
 * phone. Only pages of the signed-in user are kept, and they show masked numbers only; the
 * page clears them at logout, and so does this worker when the server says the session ended.
 * ASSETS is written in by the server. */
'use strict';
var CACHE = 'outreach-m-v1';

self.addEventListener('install', function (event) {
  event.waitUntil(caches.open(CACHE).then(function (cache) {
    return cache.addAll(ASSETS).then(function () {
      /* The pages a cadre needs without a network; one missing is no reason to fail. */
      return Promise.all(['/m/', '/m/book', '/m/tasks'].map(function (page) {
        return cache.add(page)['catch'](function () {});
      }));
    });
  }).then(function () { return self.skipWaiting(); }));
});

self.addEventListener('activate', function (event) {
  event.waitUntil(self.clients.claim());
});

function fromNetwork(request) {
  return fetch(request).then(function (response) {
    var signedOut = response.redirected && new URL(response.url).pathname === '/';
    if (signedOut) {
      caches['delete'](CACHE);
    } else if (response.ok) {
      var copy = response.clone();
      caches.open(CACHE).then(function (cache) { cache.put(request, copy); });
    }
    return response;
  });
}

self.addEventListener('fetch', function (event) {
  var request = event.request;
  if (request.method !== 'GET') return;
  var url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname.indexOf('/static/') === 0) {
    event.respondWith(caches.match(request).then(function (hit) {
      return hit || fromNetwork(request);
    }));
  } else if (url.pathname.indexOf('/m/') === 0) {
    event.respondWith(fromNetwork(request)['catch'](function () {
      return caches.match(request).then(function (hit) {
        /* A page kept for other parameters (another group to book, another tab) still
         * works: its script reads the address. */
        return hit || caches.match(request, { ignoreSearch: true });
      }).then(function (hit) {
        return hit || new Response(
          '<!doctype html><meta charset=utf-8><meta name=viewport content="width=device-width">' +
          '<p style="font:1rem sans-serif;padding:1rem">没有网络，这个页面还没有保存在手机上。<a href="/m/">返回清单</a></p>',
          { status: 503, headers: { 'content-type': 'text/html; charset=utf-8' } });
      });
    }));
  }
});
