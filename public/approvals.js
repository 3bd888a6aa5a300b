// /account/approvals: when a new request arrives (server-sent events), fetch the page again and
// swap in its list, so a request appears without the person reloading. Without JavaScript the
// page still works; it just needs a reload.
(function () {
  var list = document.getElementById('approvals');
  if (!list || !window.EventSource) return;
  var events = new EventSource(list.getAttribute('data-events'));
  events.addEventListener('pending', function () {
    fetch(location.pathname, { credentials: 'same-origin' })
      .then(function (res) { return res.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, 'text/html').getElementById('approvals');
        if (fresh) list.innerHTML = fresh.innerHTML;
      });
  });
})();
