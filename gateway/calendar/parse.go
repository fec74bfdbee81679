package calendar

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxComponents bounds a field's list, as systemd does; no schedule needs more.
const maxComponents = 240

// A field describes one numeric part of an expression: its range, how String pads it and an
// example of it that error messages offer.
type field struct {
	name    string
	prefix  string // written before values in messages: "~" for days from the end of the month
	lo, hi  int
	example string
}

var (
	yearField   = field{"year", "", minYear, maxYear, "2026-12-24 18:00"}
	monthField  = field{"month", "", 1, 12, "*-02-29 12:00"}
	dayField    = field{"day", "", 1, 31, "*-*-01 00:00"}
	hourField   = field{"hour", "", 0, 23, "Mon..Fri 02:00"}
	minuteField = field{"minute", "", 0, 59, "*:0/15"}
	secondField = field{"second", "", 0, 59, "*:*:0/10"}
	// Days counted from the end of the month reach back at most 28 days.
	endOfMonthField = field{"day", "~", 1, 28, "*-*~01"}
)

const (
	weekdayExample = "Mon..Fri 02:00"
	zoneExample    = "daily Europe/Berlin"
	anyExample     = "Mon..Fri *-*-* 02:00:00"
)

// parseError is what Parse returns: what is wrong, and a valid expression like the one meant.
type parseError struct {
	expr, msg, example string
}

func (e *parseError) Error() string {
	return fmt.Sprintf("calendar expression %q: %s; a valid one: %q", e.expr, e.msg, e.example)
}

// shorthands are the named schedules systemd knows, as the expressions they stand for.
var shorthands = map[string]string{
	"minutely":      "*-*-* *:*:00",
	"hourly":        "*-*-* *:00:00",
	"daily":         "*-*-* 00:00:00",
	"weekly":        "Mon *-*-* 00:00:00",
	"monthly":       "*-*-01 00:00:00",
	"yearly":        "*-01-01 00:00:00",
	"annually":      "*-01-01 00:00:00",
	"anually":       "*-01-01 00:00:00", // systemd's old spelling
	"quarterly":     "*-01,04,07,10-01 00:00:00",
	"semiannually":  "*-01,07-01 00:00:00",
	"semi-annually": "*-01,07-01 00:00:00",
	"biannually":    "*-01,07-01 00:00:00",
	"bi-annually":   "*-01,07-01 00:00:00",
}

// Parse parses a calendar expression; errors are one line saying what is wrong and giving an
// example of a valid one. It accepts what systemd.time(7) describes except fractional seconds
// and "@" Unix times, and the local time zone's abbreviation (CET) only where it is also a
// zone name; words are separated by any white space.
func Parse(expr string) (*Spec, error) {
	p := parser{expr: expr}
	s, err := p.parse()
	if err != nil {
		return nil, err
	}
	s.deriveSets()
	return s, nil
}

type parser struct {
	expr string
}

func (p *parser) errorf(example, format string, args ...any) error {
	return &parseError{expr: p.expr, msg: fmt.Sprintf(format, args...), example: example}
}

func (p *parser) parse() (*Spec, error) {
	words := strings.Fields(p.expr)
	if len(words) == 0 {
		return nil, p.errorf("daily", "empty expression")
	}
	s := &Spec{}
	if len(words) > 1 {
		zone, loc, err := p.zone(words[len(words)-1])
		if err != nil {
			return nil, err
		}
		if loc != nil {
			s.zone, s.loc = zone, loc
			words = words[:len(words)-1]
		}
	}
	if len(words) == 1 {
		if long, ok := shorthands[strings.ToLower(words[0])]; ok {
			words = strings.Fields(long)
		}
	}

	if words[0][0] == '@' {
		return nil, p.errorf(yearField.example, "Unix times (@N) are not supported; write the date and time")
	}
	if isLetter(words[0][0]) {
		days, err := p.weekdays(words[0])
		if err != nil {
			return nil, err
		}
		s.weekdays = days
		words = words[1:]
	}
	if len(words) > 0 && !strings.Contains(words[0], ":") {
		if err := p.date(s, words[0]); err != nil {
			return nil, err
		}
		words = words[1:]
	}
	if len(words) > 0 {
		if err := p.time(s, words[0]); err != nil {
			return nil, err
		}
		words = words[1:]
	} else {
		s.hour, s.minute, s.second = chain{{0, -1, 0}}, chain{{0, -1, 0}}, chain{{0, -1, 0}}
	}
	if len(words) > 0 {
		return nil, p.errorf(anyExample, "unexpected %q after the time; the order is [weekdays] [date] [time] [time zone]", words[0])
	}
	return s, p.normalize(s)
}

func isLetter(c byte) bool { return 'a' <= c|0x20 && c|0x20 <= 'z' }

// zone reads the last word as a time zone if it is one: "UTC" in any case, or an IANA name.
// A last word that starts with a letter can be nothing else, so an unknown one is an error
// here rather than a puzzling one about weekdays.
func (p *parser) zone(w string) (string, *time.Location, error) {
	if strings.EqualFold(w, "UTC") {
		return "UTC", time.UTC, nil
	}
	if !isLetter(w[0]) {
		return "", nil, nil
	}
	if _, err := p.weekdays(w); err == nil {
		return "", nil, p.errorf(weekdayExample, "weekdays %q come first, before the date and time", w)
	}
	if w == "Local" {
		return "", nil, p.errorf(zoneExample, "time zone %q is not a zone name; leave it out for the local time zone", w)
	}
	loc, err := time.LoadLocation(w)
	if err != nil {
		return "", nil, p.errorf(zoneExample, "unknown time zone %q", w)
	}
	if w == "UTC" {
		return "UTC", time.UTC, nil
	}
	return w, loc, nil
}

var weekdayNumbers = map[string]int{
	"mon": 0, "monday": 0, "tue": 1, "tuesday": 1, "wed": 2, "wednesday": 2,
	"thu": 3, "thursday": 3, "fri": 4, "friday": 4, "sat": 5, "saturday": 5,
	"sun": 6, "sunday": 6,
}

// weekdays parses a list of weekday names and ranges: "Sat,Sun", "Mon..Fri", "mon-wed" (the
// old range syntax). A trailing comma is allowed, as systemd allows it.
func (p *parser) weekdays(w string) (uint8, error) {
	items := strings.Split(w, ",")
	if len(items) > 1 && items[len(items)-1] == "" {
		items = items[:len(items)-1]
	}
	var days uint8
	for _, item := range items {
		from, to, ok := strings.Cut(item, "..")
		if !ok {
			from, to, ok = strings.Cut(item, "-")
		}
		a, err := p.weekday(from)
		if err != nil {
			return 0, err
		}
		b := a
		if ok {
			if b, err = p.weekday(to); err != nil {
				return 0, err
			}
		}
		if b < a {
			var fix strings.Builder
			formatWeekdays(&fix, uint8(1<<7-1<<a)|uint8(1<<(b+1)-1))
			return 0, p.errorf(weekdayExample, "weekday range %s runs backwards; weeks run Mon..Sun, so write %s", item, fix.String())
		}
		for d := a; d <= b; d++ {
			days |= 1 << d
		}
	}
	if days == 1<<7-1 {
		days = 0 // every day
	}
	return days, nil
}

func (p *parser) weekday(name string) (int, error) {
	if name == "" {
		return 0, p.errorf(weekdayExample, "missing weekday in %q", p.expr)
	}
	d, ok := weekdayNumbers[strings.ToLower(name)]
	if _, short := shorthands[strings.ToLower(name)]; short {
		return 0, p.errorf("daily Europe/Berlin", "%q stands alone, with at most a time zone after it", name)
	}
	if !ok {
		return 0, p.errorf(weekdayExample, "unknown weekday %q, expected Mon…Sun or Monday…Sunday", name)
	}
	return d, nil
}

// date parses [year-]month-day, with "~" instead of the last "-" to count days from the end of
// the month.
func (p *parser) date(s *Spec, w string) error {
	var parts []string
	var seps []byte
	rest := w
	for {
		i := strings.IndexAny(rest, "-~")
		if i < 0 {
			parts = append(parts, rest)
			break
		}
		parts, seps = append(parts, rest[:i]), append(seps, rest[i])
		rest = rest[i+1:]
	}
	switch {
	case len(parts) == 1:
		return p.errorf(dayField.example, "date %q needs a month and a day (12-24, *-*-01); a time needs a colon (02:00)", w)
	case len(parts) > 3:
		return p.errorf(dayField.example, "date %q has more than year, month and day", w)
	case len(parts) == 3 && seps[0] == '~':
		return p.errorf(endOfMonthField.example, "date %q: \"~\" goes between month and day", w)
	}
	s.endOfMonth = seps[len(seps)-1] == '~'
	dayF := dayField
	if s.endOfMonth {
		dayF = endOfMonthField
	}
	var err error
	if len(parts) == 3 {
		if s.year, err = p.chain(parts[0], yearField); err != nil {
			return err
		}
		parts = parts[1:]
	}
	if s.month, err = p.chain(parts[0], monthField); err != nil {
		return err
	}
	s.day, err = p.chain(parts[1], dayF)
	return err
}

// time parses hour:minute[:second].
func (p *parser) time(s *Spec, w string) error {
	parts := strings.Split(w, ":")
	switch {
	case len(parts) == 1:
		return p.errorf(hourField.example, "time %q needs hours and minutes (02:00)", w)
	case len(parts) > 3:
		return p.errorf(hourField.example, "time %q has more than hours, minutes and seconds", w)
	}
	var err error
	if s.hour, err = p.chain(parts[0], hourField); err != nil {
		return err
	}
	if s.minute, err = p.chain(parts[1], minuteField); err != nil {
		return err
	}
	if len(parts) == 2 {
		s.second = chain{{0, -1, 0}}
		return nil
	}
	s.second, err = p.chain(parts[2], secondField)
	return err
}

// chain parses "*" or a comma-separated list of N, N..M and either with /R.
func (p *parser) chain(w string, f field) (chain, error) {
	if w == "*" {
		return nil, nil
	}
	if w == "" {
		return nil, p.errorf(f.example, "missing %s", f.name)
	}
	items := strings.Split(w, ",")
	if len(items) > maxComponents {
		return nil, p.errorf(f.example, "more than %d values in the %s", maxComponents, f.name)
	}
	ch := make(chain, 0, len(items))
	for _, item := range items {
		c, err := p.component(item, f)
		if err != nil {
			return nil, err
		}
		ch = append(ch, c)
	}
	return ch, nil
}

func (p *parser) component(w string, f field) (component, error) {
	if strings.HasPrefix(w, "*/") {
		return component{}, p.errorf(f.example, "%s %q: write %d/N for every N from %d, not */N", f.name, w, f.lo, f.lo)
	}
	if strings.Contains(w, "*") {
		return component{}, p.errorf(f.example, "%s %q: \"*\" stands alone, not in a list or range", f.name, w)
	}
	c := component{stop: -1}
	var err error
	rest := w
	if c.start, rest, err = p.number(rest, w, f); err != nil {
		return c, err
	}
	if strings.HasPrefix(rest, "..") {
		if c.stop, rest, err = p.number(rest[2:], w, f); err != nil {
			return c, err
		}
		c.repeat = 1
	}
	if strings.HasPrefix(rest, "/") {
		if c.repeat, rest, err = p.number(rest[1:], w, f); err != nil {
			return c, err
		}
		if c.repeat == 0 {
			return c, p.errorf(f.example, "%s %q repeats every 0", f.name, w)
		}
	}
	if rest != "" {
		if f == secondField && rest[0] == '.' {
			return c, p.errorf(f.example, "second %q: fractions of a second are not supported", w)
		}
		return c, p.errorf(f.example, "%s %q: unexpected %q (values are N, N..M, N/R or N..M/R)", f.name, w, rest)
	}
	return c, nil
}

// number reads the decimal number at the start of s and returns the rest.
func (p *parser) number(s, item string, f field) (int, string, error) {
	n := 0
	for n < len(s) && '0' <= s[n] && s[n] <= '9' {
		n++
	}
	if n == 0 {
		return 0, s, p.errorf(f.example, "%s %q: expected a number", f.name, item)
	}
	if n > 9 {
		return 0, s, p.errorf(f.example, "%s %q: number out of range %d..%d", f.name, item, f.lo, f.hi)
	}
	v, err := strconv.Atoi(s[:n])
	if err != nil {
		return 0, s, p.errorf(f.example, "%s %q: %v", f.name, item, err)
	}
	return v, s[n:], nil
}

// normalize brings s to the form systemd prints and checks that every value is in range: two-
// digit years are 19xx or 20xx, a range ends on a value its repetition reaches, a range of one
// value or one its repetition never reaches is that value, lists are sorted without duplicates.
func (p *parser) normalize(s *Spec) error {
	for i := range s.year {
		for _, v := range []*int{&s.year[i].start, &s.year[i].stop} {
			switch {
			case *v >= 0 && *v < 70:
				*v += 2000
			case *v >= 70 && *v < 100:
				*v += 1900
			}
		}
	}
	if s.day == nil {
		s.endOfMonth = false
	}
	dayF := dayField
	if s.endOfMonth {
		dayF = endOfMonthField
	}
	for _, c := range []struct {
		ch *chain
		f  field
	}{{&s.year, yearField}, {&s.month, monthField}, {&s.day, dayF}, {&s.hour, hourField}, {&s.minute, minuteField}, {&s.second, secondField}} {
		*c.ch = normalizeChain(*c.ch)
		if err := p.valid(*c.ch, c.f, s.endOfMonth && c.ch == &s.day); err != nil {
			return err
		}
	}
	// Every second, written 0/1, is "*", as systemd prints it.
	if len(s.second) == 1 && s.second[0] == (component{0, -1, 1}) {
		s.second = nil
	}
	return nil
}

func normalizeChain(ch chain) chain {
	if ch == nil {
		return nil
	}
	for i := range ch {
		c := &ch[i]
		if c.stop > c.start && c.repeat > 0 {
			c.stop -= (c.stop - c.start) % c.repeat
		}
		if c.stop == c.start || (c.stop > c.start && c.repeat > 0 && c.start+c.repeat > c.stop) {
			c.stop, c.repeat = -1, 0
		}
	}
	slices.SortFunc(ch, func(a, b component) int {
		if a.start != b.start {
			return a.start - b.start
		}
		if a.stop != b.stop {
			return a.stop - b.stop
		}
		return a.repeat - b.repeat
	})
	return slices.Compact(ch)
}

// valid applies systemd's rules: values within the field's range, and a repetition that
// fires at least twice within it.
func (p *parser) valid(ch chain, f field, down bool) error {
	for _, c := range ch {
		w := f.prefix + formatComponent(c)
		switch {
		case c.start < f.lo || c.start > f.hi:
			return p.errorf(f.example, "%s %s%d out of range %d..%d", f.name, f.prefix, c.start, f.lo, f.hi)
		case c.stop >= 0 && (c.stop < f.lo || c.stop > f.hi):
			return p.errorf(f.example, "%s %s%d out of range %d..%d", f.name, f.prefix, c.stop, f.lo, f.hi)
		case c.repeat > f.hi-f.lo:
			return p.errorf(f.example, "%s %s: repetition longer than the range %d..%d", f.name, w, f.lo, f.hi)
		case c.stop >= 0 && c.start+c.repeat > c.stop:
			return p.errorf(f.example, "%s range %s runs backwards", f.name, w)
		case c.stop < 0 && c.repeat > 0 && down && c.start-c.repeat < f.lo:
			return p.errorf(f.example, "%s %s never repeats before the end of the month", f.name, w)
		case c.stop < 0 && c.repeat > 0 && !down && c.start+c.repeat > f.hi:
			return p.errorf(f.example, "%s %s never repeats within %d..%d", f.name, w, f.lo, f.hi)
		}
	}
	return nil
}

func formatComponent(c component) string {
	var b strings.Builder
	chain{c}.format(&b, 1)
	return b.String()
}
