// Package ui is cairn's web console: server-rendered pages under /ui/ on the gateway's TCP
// listener that show volumes, the backups of each as a timeline with its chains, jobs with
// live progress and their logs, policies, the repository and the services, and that run
// the same gateway calls the API and the CLI run (back up, restore, cancel, protect, prune,
// export, check), each after a confirmation.
//
// Sign-in takes a token of the API's tokens file (gateway/api's Tokens); the session is kept
// here, server-side, behind a random id in an HttpOnly, SameSite=Strict cookie, and every
// request acts as the session's caller through gateway.WithCaller, so a member sees only its
// project exactly as through the API. Every POST carries the session's CSRF token and a
// same-origin Origin or Referer. Pages are html/template; the style sheet and a small script
// (live refresh of progress) are embedded, and nothing is fetched from elsewhere.
//
// It knows the gateway and HTTP, and maps gateway errors to statuses through api.StatusOf and
// to what a caller may read of them through api.FaultMessage; it knows nothing of the
// repository's storage or the CLI.
package ui
