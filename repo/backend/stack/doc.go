// Package stack assembles the backend a repository is opened on, in the one place that
// knows the order of the layers: for S3, s3 → limit → retry (retry outermost, so a call
// waiting to retry holds no connection slot); for a local directory, local → limit. It parses
// repository URLs and fills S3 settings from the AWS_* environment. It knows the backend
// packages, nothing of what a repository stores in them.
package stack
