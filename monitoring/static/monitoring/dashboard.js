// The operator dashboard refreshes itself: every data-refresh-seconds it fetches the figures
// fragment (the same template the page was rendered with) and swaps it in. A failed refresh
// (server down, session expired) keeps the last figures and says so; the next one may work.
(function () {
  "use strict";

  const root = document.getElementById("dashboard");
  const state = document.getElementById("dashboard-state");
  if (!root) return;
  const url = root.dataset.figuresUrl;
  const seconds = Math.max(2, Number(root.dataset.refreshSeconds) || 15);
  let busy = false;

  function say(text, stale) {
    state.textContent = text;
    state.classList.toggle("stale", Boolean(stale));
  }

  function clock() {
    return new Date().toLocaleTimeString();
  }

  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const response = await fetch(url, {
        credentials: "same-origin",
        headers: { "X-Requested-With": "XMLHttpRequest" },
        redirect: "manual",
      });
      // A redirect is the admin's login page: the session is over.
      if (response.type === "opaqueredirect") {
        say("Logged out: reload the page to log in again.", true);
        return;
      }
      if (!response.ok) {
        say(`Refresh failed at ${clock()} (HTTP ${response.status}); showing older figures.`, true);
        return;
      }
      root.innerHTML = await response.text();
      say(`Updated ${clock()}.`, false);
    } catch (error) {
      say(`Refresh failed at ${clock()} (${error.message}); showing older figures.`, true);
    } finally {
      busy = false;
    }
  }

  say(`Updated ${clock()}.`, false);
  window.setInterval(refresh, seconds * 1000);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) refresh();
  });
})();
