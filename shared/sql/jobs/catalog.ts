// Every statement on `export_jobs` by name, gathered from the modules that own them, for what
// checks them all: test/workers/query-plans.test.ts (each one's plan, and that none binds more
// than a handful of D1's 100 parameters) and bench/d1-figures.ts. Code that runs a statement
// imports it from its own module, never from here.
//
// Statements are static text: lists travel as one JSON array parameter through `json_each`.

import { ARCHIVE_SQL } from "./archive.ts";
import { INSERT_SQL } from "./insert.ts";
import { LEASE_SQL } from "./leases.ts";
import { LISTING_SQL } from "./listings.ts";
import { READ_SQL } from "./reads.ts";
import { TRANSITION_SQL } from "./transitions.ts";

/** Names are unique across the modules (the query-plan test's table would miss one otherwise). */
export const JOB_SQL = {
  ...INSERT_SQL,
  ...READ_SQL,
  ...LISTING_SQL,
  ...TRANSITION_SQL,
  ...LEASE_SQL,
  ...ARCHIVE_SQL,
} as const;
