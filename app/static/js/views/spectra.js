// Spectra: the new-spectrum form (spectrum-form.js) and the recent spectrum jobs
// (spectrum-jobs.js), each a component with its own state.

import { replace } from '../dom.js';
import { pageHeader } from './common.js';
import { spectrumForm } from './spectrum-form.js';
import { recentSpectrumJobs } from './spectrum-jobs.js';

export function spectraView(main, { query }) {
  const form = spectrumForm({ query });
  const jobs = recentSpectrumJobs();
  replace(main, pageHeader('Spectra'), form.el, jobs.el);
  return () => { form.destroy(); jobs.destroy(); };
}
