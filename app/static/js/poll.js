// Polling that waits for each round to finish before scheduling the next one, pauses
// while the tab is hidden, and stops for good when the view is disposed.

/**
 * const p = poll(async () => {...}, 1200); p.now(); p.stop();
 * fn may return false to stop polling (e.g. when the job has finished).
 */
export function poll(fn, intervalMs) {
  let timer = null;
  let running = false;
  let stopped = false;
  let again = false;

  async function tick() {
    timer = null;
    if (stopped) return;
    if (document.hidden) return;  // resumed by visibilitychange
    if (running) { again = true; return; }
    running = true;
    let keep = true;
    try {
      keep = (await fn()) !== false;
    } catch (err) {
      if (err?.name !== 'AbortError') keep = true;  // errors are shown by fn; keep trying
    } finally {
      running = false;
    }
    if (!keep) { stopped = true; }
    if (stopped) return;
    if (again) { again = false; tick(); return; }
    timer = setTimeout(tick, intervalMs);
  }

  function onVisible() {
    if (!document.hidden && !stopped && !running && timer === null) tick();
  }
  document.addEventListener('visibilitychange', onVisible);
  tick();

  return {
    now() {
      if (stopped) return;
      if (timer !== null) { clearTimeout(timer); timer = null; }
      tick();
    },
    stop() {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      document.removeEventListener('visibilitychange', onVisible);
    },
    get stopped() { return stopped; },
  };
}
