// The office's set-up pages: a new campaign's dates follow its year, a calendar file is read
// in the browser and sent with the form, and the institution field shows for clinic staff only.
(function () {
  'use strict';

  // A new campaign: changing the year moves every date of the form by as many years, keeping
  // the end of February at the end of February.
  var year = document.querySelector('[data-testid=campaign-year]');
  if (year) {
    var shown = Number(year.value);
    var lastOfFebruary = function (y) { return new Date(Date.UTC(y, 2, 0)).getUTCDate(); };
    year.addEventListener('change', function () {
      var next = Number(year.value);
      if (!(next >= 2000 && next <= 2100) || !(shown >= 2000)) return;
      var delta = next - shown;
      year.form.querySelectorAll('input[type=date]').forEach(function (input) {
        var m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(input.value);
        if (!m) return;
        var y = Number(m[1]), month = Number(m[2]), day = Number(m[3]);
        var moved = y + delta;
        if (month === 2 && day >= 28 && day === lastOfFebruary(y)) day = lastOfFebruary(moved);
        input.value = String(moved) + '-' + m[2] + '-' + String(day).padStart(2, '0');
      });
      var name = year.form.querySelector('[name=name]');
      if (name) name.placeholder = '默认：' + next + '年全民健康体检';
      shown = next;
    });
  }

  // The calendar upload: the chosen file's bytes go as base64 in the form (GB18030 files as
  // Excel writes them stay as they are; the server decodes them).
  var upload = document.querySelector('[data-testid=calendar-import-form]');
  if (upload) {
    upload.addEventListener('submit', function (event) {
      var file = upload.querySelector('input[type=file]').files[0];
      if (!file) return;
      event.preventDefault();
      var reader = new FileReader();
      reader.onload = function () {
        var bytes = new Uint8Array(reader.result);
        var text = '';
        for (var i = 0; i < bytes.length; i += 0x8000) {
          text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
        }
        upload.querySelector('[name=csv_base64]').value = btoa(text);
        upload.submit();
      };
      reader.readAsArrayBuffer(file);
    });
  }

  // The institution a user works for matters for clinic staff only.
  document.querySelectorAll('[data-testid=user-form]').forEach(function (form) {
    var role = form.querySelector('[name=role]');
    var clinic = form.querySelector('.for-clinic');
    if (!role || !clinic) return;
    var show = function () { clinic.hidden = role.value !== 'institution'; };
    role.addEventListener('change', show);
    show();
  });
})();
