package stack

import (
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		in      string
		want    URL
		wantErr bool
	}{
		{"/srv/cairn", URL{Kind: Local, Path: "/srv/cairn"}, false},
		{"./repo", URL{Kind: Local, Path: "./repo"}, false},
		{"file:///srv/cairn", URL{Kind: Local, Path: "/srv/cairn"}, false},
		{"file://repo", URL{Kind: Local, Path: "repo"}, false},
		{"s3://bucket", URL{Kind: S3, Bucket: "bucket"}, false},
		{"s3://bucket/", URL{Kind: S3, Bucket: "bucket"}, false},
		{"s3://bucket/a/b/", URL{Kind: S3, Bucket: "bucket", Prefix: "a/b"}, false},
		{"", URL{}, true},
		{"s3://", URL{}, true},
		{"s3:///prefix", URL{Kind: S3, Bucket: "prefix"}, false},
		{"s3://host:9000/bucket", URL{}, true},
		{"s3://bucket/a/../b", URL{}, true},
		{"file://", URL{}, true},
		{"sftp://host/x", URL{}, true},
	}
	for _, tt := range tests {
		got, err := ParseURL(tt.in)
		if (err != nil) != tt.wantErr || (err == nil && got != tt.want) {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestParseURLNeverShowsCredentials: keys written into a repository URL (as some tools take
// them) are refused with an error that does not repeat them; a secret may hold slashes.
func TestParseURLNeverShowsCredentials(t *testing.T) {
	for _, in := range []string{
		"s3://AKIAEXAMPLE:s3cr3t@bucket/prefix",
		"s3://AKIAEXAMPLE:s3cr3t/with/slashes@bucket/prefix",
		"s3://AKIAEXAMPLE:s3cr3t@127.0.0.1:9000/bucket",
		"s3:https://AKIAEXAMPLE:s3cr3t@host/bucket",
		"https://AKIAEXAMPLE:s3cr3t@host/bucket",
	} {
		_, err := ParseURL(in)
		if err == nil {
			t.Errorf("ParseURL(%q) succeeded", in)
			continue
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("ParseURL(%q) = %q: the error shows the secret", in, err)
		}
	}
}

func TestIsRemote(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"/srv/cairn", false},
		{"file:///srv/cairn", false},
		{"s3://bucket/prefix", true},
		{"sftp://x/y", false},
	}
	for _, tt := range tests {
		if got := IsRemote(tt.in); got != tt.want {
			t.Errorf("IsRemote(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestURLString(t *testing.T) {
	for _, s := range []string{"/srv/cairn", "s3://bucket", "s3://bucket/a/b"} {
		u, err := ParseURL(s)
		if err != nil {
			t.Fatal(err)
		}
		if u.String() != s {
			t.Errorf("ParseURL(%q).String() = %q", s, u.String())
		}
	}
}

func TestWithEnv(t *testing.T) {
	env := map[string]string{
		"AWS_ENDPOINT_URL":      "http://127.0.0.1:9000",
		"AWS_ACCESS_KEY_ID":     "envkey",
		"AWS_SECRET_ACCESS_KEY": "envsecret",
		"AWS_DEFAULT_REGION":    "eu-west-1",
	}
	tests := []struct {
		name string
		cfg  Config
		env  map[string]string
		want Config
	}{
		{"env fills empty fields", Config{}, env,
			Config{Endpoint: "http://127.0.0.1:9000", AccessKey: "envkey", SecretKey: "envsecret", Region: "eu-west-1"}},
		{"flags win", Config{Endpoint: "http://127.0.0.1:1", AccessKey: "flagkey", Region: "us-east-2"}, env,
			Config{Endpoint: "http://127.0.0.1:1", AccessKey: "flagkey", SecretKey: "envsecret", Region: "us-east-2"}},
		{"AWS_REGION before AWS_DEFAULT_REGION", Config{}, map[string]string{"AWS_REGION": "a", "AWS_DEFAULT_REGION": "b"},
			Config{Region: "a"}},
		{"no env", Config{AccessKey: "k"}, nil, Config{AccessKey: "k"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.cfg.withEnv(func(k string) string { return tt.env[k] })
			if got != tt.want {
				t.Fatalf("withEnv = %+v, want %+v", got, tt.want)
			}
		})
	}
}
