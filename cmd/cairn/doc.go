// Command cairn is the command-line interface to cairn: it parses arguments with kong, calls
// the gateway service layer (in-process) and prints tables, JSON and progress. It holds no
// business logic, and it is the one place that maps errors to exit codes.
package main
