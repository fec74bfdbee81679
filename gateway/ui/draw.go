package ui

import (
	"fmt"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"

	"github.com/cairn-backup/cairn/units"
)

// Geometry of the chain drawing: one column per backup, oldest first, one lane per chain.
const (
	chainLeft = 28
	chainStep = 44
	chainTop  = 22
	chainLane = 40
)

// chainNode is one backup in the chain drawing.
type chainNode struct {
	N                int
	ID               string
	X, Y             int
	Full             bool
	Protected        bool
	Class            string // the status, for the style sheet
	Title            string
	HasParent        bool
	ParentX, ParentY int
}

// chainView is the drawing of a volume's backups: fulls as squares, incrementals as
// circles, a line from each incremental to its parent, protected ones ringed.
type chainView struct {
	Width, Height int
	Nodes         []chainNode
}

// drawChains lays out bs (oldest first). A backup's lane is its chain's: the lane of the full
// (or of the oldest backup whose parent is not listed) it descends from.
func drawChains(bs []*index.Backup) chainView {
	pos := map[string]int{}
	for i, b := range bs {
		pos[b.ID] = i
	}
	lane := make([]int, len(bs))
	lanes := 0
	for i, b := range bs {
		if p, ok := pos[b.ParentID]; ok && b.ParentID != "" && p < i {
			lane[i] = lane[p]
			continue
		}
		lane[i] = lanes
		lanes++
	}
	v := chainView{Width: chainLeft*2 + chainStep*max(len(bs)-1, 0), Height: chainTop*2 + chainLane*max(lanes-1, 0)}
	for i, b := range bs {
		n := chainNode{N: i + 1, ID: b.ID, X: chainLeft + i*chainStep, Y: chainTop + lane[i]*chainLane,
			Full: !b.IsIncremental, Protected: b.Protected, Class: string(b.Status)}
		kind := "full"
		if b.IsIncremental {
			kind = "incremental"
		}
		n.Title = fmt.Sprintf("#%d %s backup %s, %s, %s", n.N, kind, b.ID[:min(8, len(b.ID))], b.Status, stamp(b.CreatedAt))
		if b.Protected {
			n.Title += ", protected"
		}
		if p, ok := pos[b.ParentID]; ok && b.ParentID != "" {
			n.HasParent, n.ParentX, n.ParentY = true, chainLeft+p*chainStep, chainTop+lane[p]*chainLane
		}
		v.Nodes = append(v.Nodes, n)
	}
	return v
}

// chartView is stored bytes over time as a polyline.
type chartView struct {
	Width, Height int
	Points        string
	Max           string
	From, To      string
	Last          string
	Empty         bool
}

// Geometry of the stored-bytes chart.
const (
	chartW, chartH = 640, 160
	chartPad       = 8
)

// drawStored scales samples into the chart.
func drawStored(samples []gateway.StoredSample) chartView {
	v := chartView{Width: chartW, Height: chartH, Empty: len(samples) == 0}
	if v.Empty {
		return v
	}
	var top int64 = 1
	for _, s := range samples {
		top = max(top, s.StoredBytes)
	}
	from, to := samples[0].At, samples[len(samples)-1].At
	span := max(to.Sub(from), time.Second)
	var pts []string
	for _, s := range samples {
		x := chartPad + float64(chartW-2*chartPad)*float64(s.At.Sub(from))/float64(span)
		y := float64(chartH-chartPad) - float64(chartH-2*chartPad)*float64(s.StoredBytes)/float64(top)
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
	}
	if len(pts) == 1 {
		pts = append(pts, fmt.Sprintf("%d,%s", chartW-chartPad, strings.Split(pts[0], ",")[1]))
	}
	v.Points = strings.Join(pts, " ")
	v.Max, v.From, v.To = units.Bytes(top), stamp(from), stamp(to)
	v.Last = units.Bytes(samples[len(samples)-1].StoredBytes)
	return v
}
