package retention_test

import (
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway/retention"
)

func TestRulesEmptyAndString(t *testing.T) {
	tests := []struct {
		rules retention.Rules
		empty bool
		str   string
	}{
		{retention.Rules{}, true, "no rules"},
		{retention.Rules{Location: time.UTC}, true, "no rules"},
		{retention.Rules{Within: -time.Hour}, true, "no rules"},
		{retention.Rules{Last: 2, Daily: 7, Within: 48 * time.Hour}, false, "last 2, daily 7, within 48h0m0s"},
		{retention.Rules{Yearly: -1}, false, "yearly unlimited"},
		{retention.Rules{Last: -1}, false, "last unlimited"},
		{retention.Rules{Hourly: 24, Weekly: 4, Monthly: 12, Yearly: 3}, false, "hourly 24, weekly 4, monthly 12, yearly 3"},
		{retention.Rules{Within: time.Minute}, false, "within 1m0s"},
		{retention.Rules{Daily: 7, Location: berlin(t)}, false, "daily 7 (Europe/Berlin)"},
	}
	for _, tt := range tests {
		t.Run(tt.str, func(t *testing.T) {
			if got := tt.rules.Empty(); got != tt.empty {
				t.Errorf("%+v: Empty() = %v, want %v", tt.rules, got, tt.empty)
			}
			if got := tt.rules.String(); got != tt.str {
				t.Errorf("%+v: String() = %q, want %q", tt.rules, got, tt.str)
			}
		})
	}
}
