/**
 * Under CI=true a skipped test is a failure: every peer a test needs is installed and started by
 * the project's own scripts, so a skip there means a missing install step. Outside CI, skips are
 * listed with their names so the reason is visible.
 */
import type { Reporter, TestModule } from 'vitest/node';

export default class NoSkipReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const skipped: string[] = [];
    for (const m of testModules) {
      for (const t of m.children.allTests()) {
        if (t.result().state === 'skipped') skipped.push(`${m.moduleId}: ${t.fullName}`);
      }
    }
    if (skipped.length === 0) return;
    const list = skipped.map((s) => `  - ${s}`).join('\n');
    if (process.env.CI === 'true') {
      console.error(`\n${skipped.length} test(s) skipped under CI=true, which counts as a failure:\n${list}\n`);
      process.exitCode = 1;
    } else {
      console.warn(`\n${skipped.length} test(s) skipped (a failure under CI=true):\n${list}\n`);
    }
  }
}
