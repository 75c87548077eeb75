// A burst of spot interruption warnings handled by Karpenter's own interruption controller
// (github.com/aws/karpenter-provider-aws/pkg/controllers/interruption), timed the way nodesmith's
// `benches/controller-bench.sh interruptions N` times its own: N NodeClaims with their Nodes, the controller
// running and its caches synced, then N messages sent in batches of ten; the figure is the time from the first
// send until every NodeClaim's deletion was requested, and per message from its batch's send to that request.
//
// Karpenter's interruption_benchmark_test.go (build tag test_performance) does not compile at v1.14.1 (it calls
// aws-sdk-go v1 methods on a v2 client and the controller's old Builder), and it would not finish if it did: its
// Nodes have no NodeClaims, so no message is acted on. This file sets the controller up as Karpenter's operator
// does instead: the manager's cached client with the instance-ID field indexes, client QPS 200 / burst 300 (the
// operator's defaults), and a real SQS client (aws-sdk-go-v2, pointed at the sandbox's SQS server with
// AWS_ENDPOINT_URL_SQS). Only the interruption controller runs; Karpenter's termination is not part of the figure.
//
// Run by benches/controller-bench.sh (interruptions mode), which starts the SQS server and points
// KUBEBUILDER_ASSETS at the sandbox's etcd and kube-apiserver.
package burst_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	servicesqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/samber/lo"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	controllerruntime "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	karpv1 "sigs.k8s.io/karpenter/pkg/apis/v1"
	"sigs.k8s.io/karpenter/pkg/events"
	coreoptions "sigs.k8s.io/karpenter/pkg/operator/options"
	coretest "sigs.k8s.io/karpenter/pkg/test"

	"github.com/aws/karpenter-provider-aws/pkg/apis"
	awscache "github.com/aws/karpenter-provider-aws/pkg/cache"
	"github.com/aws/karpenter-provider-aws/pkg/controllers/interruption"
	"github.com/aws/karpenter-provider-aws/pkg/fake"
	"github.com/aws/karpenter-provider-aws/pkg/operator/options"
	"github.com/aws/karpenter-provider-aws/pkg/providers/sqs"
	"github.com/aws/karpenter-provider-aws/pkg/test"
)

// deletions records when each NodeClaim's deletion on interruption was published (the controller publishes it
// right after its Delete call succeeded).
type deletions struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (d *deletions) Publish(evts ...events.Event) {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, evt := range evts {
		if claim, ok := evt.InvolvedObject.(*karpv1.NodeClaim); ok && evt.Reason == "TerminatingOnInterruption" {
			if _, seen := d.at[claim.Name]; !seen {
				d.at[claim.Name] = now
			}
		}
	}
}

func (d *deletions) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.at)
}

func TestInterruptionBurst(t *testing.T) {
	count, err := strconv.Atoi(lo.CoalesceOrEmpty(os.Getenv("BURST_MESSAGES"), "1000"))
	if err != nil || count < 1 {
		t.Fatalf("BURST_MESSAGES=%q is not a positive count", os.Getenv("BURST_MESSAGES"))
	}
	if os.Getenv("AWS_ENDPOINT_URL_SQS") == "" {
		t.Fatalf("AWS_ENDPOINT_URL_SQS must name the SQS server the burst goes through")
	}
	// The controller's own log, on stderr (controller-bench.sh keeps it in target/controller-bench-karpenter.log):
	// a message whose handling failed is logged there before it comes back after its visibility timeout.
	controllerruntime.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	queueName := "karpenter-interruption-bench"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = coreoptions.ToContext(ctx, coretest.Options())
	ctx = options.ToContext(ctx, test.Options(test.OptionsFields{
		ClusterName:       lo.ToPtr("bench"),
		InterruptionQueue: lo.ToPtr(queueName),
	}))

	env := coretest.NewEnvironment(coretest.WithCRDs(apis.CRDs...))
	defer func() { _ = env.Stop() }()

	awsConfig, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		t.Fatalf("loading the AWS config: %v", err)
	}
	sqsAPI := servicesqs.NewFromConfig(awsConfig)
	created, err := sqsAPI.CreateQueue(ctx, &servicesqs.CreateQueueInput{QueueName: aws.String(queueName)})
	if err != nil {
		t.Fatalf("creating the queue: %v", err)
	}
	queueURL := aws.ToString(created.QueueUrl)
	sqsProvider, err := sqs.NewDefaultProvider(sqsAPI, queueURL)
	if err != nil {
		t.Fatalf("the SQS provider: %v", err)
	}

	// NodeClaims and their Nodes, each naming its own instance.
	instances := make([]string, count)
	claimOf := make(map[string]string, count)
	for i := range instances {
		instances[i] = fake.InstanceID()
	}
	errs := make([]error, count)
	workqueue.ParallelizeUntil(ctx, 20, count, func(i int) {
		claim, node := coretest.NodeClaimAndNode(karpv1.NodeClaim{
			ObjectMeta: metav1.ObjectMeta{
				Name: fmt.Sprintf("bench-%d", i),
				Labels: map[string]string{
					karpv1.NodePoolLabelKey:        "default",
					karpv1.CapacityTypeLabelKey:    karpv1.CapacityTypeSpot,
					corev1.LabelInstanceTypeStable: "t3.micro",
					corev1.LabelTopologyZone:       "us-east-1a",
				},
			},
			Status: karpv1.NodeClaimStatus{ProviderID: fake.ProviderID(instances[i])},
		})
		status := claim.Status
		if err := env.Client.Create(ctx, claim); err != nil {
			errs[i] = fmt.Errorf("creating NodeClaim: %w", err)
			return
		}
		claim.Status = status
		if err := env.Client.Status().Update(ctx, claim); err != nil {
			errs[i] = fmt.Errorf("NodeClaim status: %w", err)
			return
		}
		if err := env.Client.Create(ctx, node); err != nil {
			errs[i] = fmt.Errorf("creating Node: %w", err)
		}
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range instances {
		claimOf[id] = fmt.Sprintf("bench-%d", i)
	}

	// The controller as the operator runs it.
	restConfig := rest.CopyConfig(env.Config)
	restConfig.QPS, restConfig.Burst = 200, 300
	manager, err := controllerruntime.NewManager(restConfig, controllerruntime.Options{
		// Reconciles see the operator's options, as in the operator.
		BaseContext:            func() context.Context { return ctx },
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatalf("the manager: %v", err)
	}
	for _, index := range []func(context.Context) error{
		func(ctx context.Context) error { return test.NodeInstanceIDFieldIndexer(ctx)(manager.GetCache()) },
		func(ctx context.Context) error { return test.NodeClaimInstanceIDFieldIndexer(ctx)(manager.GetCache()) },
	} {
		if err := index(ctx); err != nil {
			t.Fatalf("a field index: %v", err)
		}
	}
	recorded := &deletions{at: map[string]time.Time{}}
	controller := interruption.NewController(manager.GetClient(), clock.RealClock{}, nil, recorded, sqsProvider, sqsAPI,
		awscache.NewUnavailableOfferings(), nil)
	if err := controller.Register(ctx, manager); err != nil {
		t.Fatalf("registering the controller: %v", err)
	}
	managerErr := make(chan error, 1)
	go func() { managerErr <- manager.Start(ctx) }()
	if !manager.GetCache().WaitForCacheSync(ctx) {
		t.Fatalf("the manager's cache did not sync")
	}
	// Like nodesmith's bench: the claims are in the cache before the burst.
	claims := &karpv1.NodeClaimList{}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if err := manager.GetClient().List(ctx, claims); err == nil && len(claims.Items) == count {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cache holds %d NodeClaims, not %d", len(claims.Items), count)
		}
	}
	time.Sleep(2 * time.Second)

	sent := make(map[string]time.Time, count)
	burst := time.Now()
	for start := 0; start < count; start += 10 {
		batch := instances[start:min(start+10, count)]
		entries := make([]sqstypes.SendMessageBatchRequestEntry, 0, len(batch))
		for i, id := range batch {
			body, err := json.Marshal(map[string]any{
				"version": "0", "id": fmt.Sprintf("bench-%d-%d", start, i), "source": "aws.ec2",
				"detail-type": "EC2 Spot Instance Interruption Warning", "account": "123456789012",
				"time": time.Now().UTC().Format(time.RFC3339), "region": "us-east-1",
				"resources": []string{"arn:aws:ec2:us-east-1:123456789012:instance/" + id},
				"detail":    map[string]string{"instance-id": id, "instance-action": "terminate"},
			})
			if err != nil {
				t.Fatal(err)
			}
			entries = append(entries, sqstypes.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: aws.String(string(body))})
		}
		if _, err := sqsAPI.SendMessageBatch(ctx, &servicesqs.SendMessageBatchInput{QueueUrl: aws.String(queueURL), Entries: entries}); err != nil {
			t.Fatalf("sending: %v", err)
		}
		now := time.Now()
		for _, id := range batch {
			sent[claimOf[id]] = now
		}
	}
	sentIn := time.Since(burst)
	for deadline := time.Now().Add(10 * time.Minute); recorded.count() < count; time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-managerErr:
			t.Fatalf("the manager stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d NodeClaims acted on after 10 minutes", recorded.count(), count)
		}
	}
	recorded.mu.Lock()
	latencies := make([]float64, 0, count)
	last := burst
	for claim, at := range recorded.at {
		latencies = append(latencies, at.Sub(sent[claim]).Seconds())
		if at.After(last) {
			last = at
		}
	}
	recorded.mu.Unlock()
	sort.Float64s(latencies)
	allMarked := last.Sub(burst).Seconds()
	fmt.Printf("karpenter: %d spot interruption messages sent in %.1f s; every NodeClaim marked for deletion %.1f s after the first; per message p50 %.2f s, p99 %.2f s; %.0f messages/s\n",
		count, sentIn.Seconds(), allMarked, percentile(latencies, 50), percentile(latencies, 99), float64(count)/allMarked)
}

// percentile as nodesmith's bench takes it (bench_support.rs): the value at rank round(p% of (n-1)).
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Round(p / 100.0 * float64(len(sorted)-1)))
	return sorted[min(rank, len(sorted)-1)]
}
