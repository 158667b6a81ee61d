// MhcPostMix (V4.1): the single-pass boundary, MhcPost of site k, the collapse with
// site k's pre and the mixes of site k+1 (contract: shared/spec/mhc_ops.md,
// "MhcPostMix"). Kernel call, plugin and creator.
#include "mhcV41.h"

namespace mhc
{
namespace plugin
{
namespace
{
char const* const kNAME = "MhcPostMix";

// Inputs: x [T,d], residual [T,n,d], pre_mix, post_mix [T,n], comb_mix [T,n,n], hc_fn [M,K],
// hc_scale [3], hc_base [M]. Outputs: residual_out [T,n,d], layer_input [T,d],
// next_pre_mix, next_post_mix [T,n], next_comb_mix [T,n,n].
constexpr int32_t kNB_IN = 8;
constexpr int32_t kNB_OUT = 5;
constexpr int32_t kRESIDUAL = 1;

class MhcPostMixPlugin final : public MhcPlugin<MhcPostMixPlugin, kNB_IN, kNB_OUT, kRESIDUAL>
{
public:
    explicit MhcPostMixPlugin(Fields const& fields)
        : MhcPlugin(kNAME, fields)
        , mParams(v41MixParams(fields))
    {
    }

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kNB_IN, kNB_OUT) || !v41TypesOk(kNAME, inputTypes[0], inputTypes[1]))
        {
            return -1;
        }
        outputTypes[0] = inputTypes[0];
        outputTypes[1] = inputTypes[0];
        for (int32_t i = 2; i < kNB_OUT; ++i)
        {
            outputTypes[i] = nvinfer1::DataType::kFLOAT;
        }
        return 0;
    }

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kNB_IN, kNB_OUT)
            || !v41RanksOk(kNAME, inputs, {2, 3, 2, 2, 3, 2, 1, 1},
                "x [T,d], residual [T,n,d], pre_mix [T,n], post_mix [T,n], comb_mix [T,n,n], hc_fn [M,K], "
                "hc_scale [3], hc_base [M]")
            || !v41XOk(kNAME, inputs[0], inputs[kRESIDUAL]) || !v41WeightsOk(kNAME, inputs[kRESIDUAL], inputs[5]))
        {
            return -1;
        }
        nvinfer1::DimsExprs const& res = inputs[kRESIDUAL];
        v41SetDims(outputs[0], res, "Tnd");
        v41SetDims(outputs[1], res, "Td");
        v41SetDims(outputs[2], res, "Tn");
        v41SetDims(outputs[3], res, "Tn");
        v41SetDims(outputs[4], res, "Tnn");
        return 0;
    }

    bool supportsFormat(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut) const noexcept override
    {
        // residual, residual_out and layer_input follow x.
        return v41FormatOk(pos, inOut, 0, {kRESIDUAL, kNB_IN, kNB_IN + 1});
    }

    size_t workspaceSize(int64_t t, int32_t n, int32_t d, mhcDtype_t dtype) const noexcept override
    {
        return mhcPostMixWorkspaceSize(t, n, d, dtype);
    }

    int32_t launch(KernelCall const& c) noexcept override
    {
        auto f = [&](int32_t i) { return static_cast<float const*>(c.inputs[i]); };
        auto o = [&](int32_t i) { return static_cast<float*>(c.outputs[i]); };
        mhcStatus_t const st = mhcPostMix(c.inputs[0], c.inputs[1], f(2), f(3), f(4), f(5), f(6), f(7), c.outputs[0],
            c.outputs[1], o(2), o(3), o(4), c.t, c.n, c.d, c.dtype, &mParams, c.workspace,
            workspaceSize(c.t, c.n, c.d, c.dtype), c.stream);
        return st == MHC_STATUS_SUCCESS ? 0 : reportKernelFailure(kNAME, "mhcPostMix", st);
    }

private:
    int32_t checkStatic(nvinfer1::PluginTensorDesc const& res) const noexcept override
    {
        return checkResidualShape(kNAME, res);
    }

    mhcPreParams mParams{};
};
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcPostMixCreator() noexcept
{
    static MhcCreator<MhcPostMixPlugin> creator(kNAME, v41MixFields());
    return &creator;
}

} // namespace plugin
} // namespace mhc
