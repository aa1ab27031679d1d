// Polling that waits for each round to finish before scheduling the next one, pauses
// while the tab is hidden, and stops for good when the view is disposed.

/**
 * const p = poll(async () => {...}, 1200); p.now(); p.stop();
 * fn may return false to stop polling (e.g. when the job has finished). A round that
 * throws is not fatal: fn shows its own errors and the next round tries again.
 */
export function poll(fn, intervalMs) {
  let timer = null;
  let running = false;
  let stopped = false;
  let again = false;

  function stop() {
    stopped = true;
    if (timer !== null) clearTimeout(timer);
    timer = null;
    document.removeEventListener('visibilitychange', onVisible);
  }

  async function tick() {
    timer = null;
    if (stopped || document.hidden) return;  // a hidden tab resumes on visibilitychange
    if (running) { again = true; return; }
    running = true;
    let keep = true;
    try {
      keep = (await fn()) !== false;
    } catch {
      keep = true;
    } finally {
      running = false;
    }
    if (!keep) stop();
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
    stop,
    get stopped() { return stopped; },
  };
}
