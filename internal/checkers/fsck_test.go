package checkers

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/powercut/powercut/explore"
	"github.com/powercut/powercut/image"
	"github.com/powercut/powercut/internal/scratch"
	"github.com/powercut/powercut/internal/testenv"
	"github.com/powercut/powercut/pclog"
)

// The built-in fsck checkers with the real tools: a freshly made file system passes, a zeroed
// device is a violation, and the base file is never modified (the checks write, e.g. journal or
// log replay, into the scratch layer only).
func TestFsckRealFileSystems(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireFUSE(t)
	for _, tc := range []struct {
		fs   string
		size int64
		mkfs []string
	}{
		{"ext4", 64 << 20, []string{"mkfs.ext4", "-q", "-F"}},
		{"xfs", 300 << 20, []string{"mkfs.xfs", "-q", "-f"}},
		{"btrfs", 128 << 20, []string{"mkfs.btrfs", "-q", "-f"}},
	} {
		t.Run(tc.fs, func(t *testing.T) {
			testenv.RequireTool(t, tc.mkfs[0])
			if tc.fs != "ext4" {
				testenv.RequireLoop(t)
			}
			dir, err := scratch.New(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer dir.Close()
			chk, err := NewFsck(tc.fs, Files{Dir: dir})
			if err != nil {
				t.Skipf("skipping: %v", err)
			}
			basePath := filepath.Join(t.TempDir(), "base.img")
			f, err := os.Create(basePath)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(tc.size); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if out, err := exec.Command(tc.mkfs[0], append(tc.mkfs[1:], basePath)...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v\n%s", tc.mkfs, err, out)
			}
			hash := func() string {
				f, err := os.Open(basePath)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				_, h, err := pclog.HashBase(f)
				if err != nil {
					t.Fatal(err)
				}
				return h
			}
			before := hash()
			base, err := os.Open(basePath)
			if err != nil {
				t.Fatal(err)
			}
			defer base.Close()
			good := &explore.Candidate{ID: "good", Images: map[uint16]*image.Image{0: image.New(tc.size, base, nil, nil)}}
			v, err := chk.Check(context.Background(), good)
			if err != nil || len(v) != 0 {
				t.Fatalf("fresh %s: violations %v, err %v", tc.fs, v, err)
			}
			zero := &explore.Candidate{ID: "zero", Images: map[uint16]*image.Image{0: image.New(tc.size, nil, nil, nil)}}
			v, err = chk.Check(context.Background(), zero)
			if err != nil || len(v) == 0 {
				t.Fatalf("zeroed device: violations %v, err %v; want a violation", v, err)
			}
			t.Logf("zeroed device: %s: %s", v[0].Oracle, v[0].Detail)
			if hash() != before {
				t.Fatal("the base image was modified by a check")
			}
		})
	}
}
