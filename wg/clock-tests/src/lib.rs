//! Nothing to ship: this package only holds `tests/`, which run dlog-wg's
//! sans-IO core with boringtun's timers on the simulation's virtual clock.
