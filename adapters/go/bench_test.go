package flowbridge

import (
	"bufio"
	"context"
	"encoding/binary"
	"os"
	"testing"
)

// BenchmarkServe measures requests per second through ServeIO over OS pipes, with
// up to 64 requests in flight, as the bridge would keep them.
func BenchmarkServe(b *testing.B) {
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	p := Plugin{Execute: func(ctx context.Context, t *Task) (any, error) {
		return Map{{"i", t.ID}, {"n", len(t.RawConfig)}}, nil
	}}
	done := make(chan error, 1)
	go func() { done <- ServeIO(p, inR, outW); outW.Close() }()

	frame := func(kv Map) []byte {
		var enc encoder
		body, _ := enc.appendValue(nil, kv, 0)
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
	}
	w := bufio.NewWriter(inW)
	w.Write(frame(Map{{"type", "hello"}, {"protocols", []any{1}}, {"plugin", "bench"}}))
	w.Flush()
	r := bufio.NewReader(outR)
	if _, err := readFrame(r, DefaultMaxFrame); err != nil {
		b.Fatal(err)
	}
	config := []byte(`{"i":1,"payload":"abc"}`)
	window := make(chan struct{}, 64)
	b.ResetTimer()
	go func() {
		for i := 0; i < b.N; i++ {
			window <- struct{}{}
			w.Write(frame(Map{{"type", "task"}, {"id", i}, {"config", config}, {"element_job", "ej"}, {"timeout_ms", 60000}}))
			if len(window) == cap(window) || i == b.N-1 {
				w.Flush()
			}
		}
		w.Write(frame(Map{{"type", "stop"}}))
		w.Flush()
	}()
	for i := 0; i < b.N; i++ {
		if _, err := readFrame(r, DefaultMaxFrame); err != nil {
			b.Fatal(err)
		}
		<-window
	}
	b.StopTimer()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}
