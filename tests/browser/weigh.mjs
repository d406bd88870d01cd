// The bytes a phone downloads on a first visit to each page: the HTML and every asset it
// references, raw and after gzip -9. Not a test: run against a live service, e.g. `outreach
// demo --residents 2000`, signed in as its cadre:
//   node tests/browser/weigh.mjs http://127.0.0.1:8080 cadre.almale <password> /m/ /m/tasks …
import { gzipSync } from 'node:zlib';

const [base, username, password, ...pages] = process.argv.slice(2);
const login = await fetch(`${base}/`, {
  method: 'POST',
  redirect: 'manual',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams({ username, password }).toString(),
});
const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0];
const get = async (path) => Buffer.from(await (await fetch(base + path, { headers: { cookie } })).arrayBuffer());
for (const path of pages) {
  const html = await get(path);
  const assets = [...html.toString().matchAll(/(?:src|href)="(\/static\/[^"]+)"/g)].map((m) => m[1]);
  const parts = [html, ...(await Promise.all(assets.map(get)))];
  const raw = parts.reduce((n, b) => n + b.length, 0);
  const gzip = parts.reduce((n, b) => n + gzipSync(b, { level: 9 }).length, 0);
  const names = assets.map((a) => a.split('/').pop()).join(', ');
  console.log(`${path}\tHTML ${html.length} B\tassets ${raw - html.length} B (${names})\ttotal ${raw} B\tgzip -9 ${gzip} B`);
}
