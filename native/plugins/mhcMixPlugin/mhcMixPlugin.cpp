// MhcMix (V4.1): residual [T,n,d] -> pre_mix [T,n], post_mix [T,n], comb_mix [T,n,n]
// (contract: shared/spec/mhc_ops.md, "MhcMix"). Kernel call, plugin and creator.
#include "mhcV41.h"

namespace mhc
{
namespace plugin
{
namespace
{
char const* const kNAME = "MhcMix";

// Inputs: residual, hc_fn, hc_scale, hc_base. Outputs: pre_mix, post_mix, comb_mix.
constexpr int32_t kNB_IN = 4;
constexpr int32_t kNB_OUT = 3;

class MhcMixPlugin final : public MhcPlugin<MhcMixPlugin, kNB_IN, kNB_OUT, 0>
{
public:
    explicit MhcMixPlugin(Fields const& fields)
        : MhcPlugin(kNAME, fields)
        , mParams(v41MixParams(fields))
    {
    }

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kNB_IN, kNB_OUT))
        {
            return -1;
        }
        if (!isResidualType(inputTypes[0]))
        {
            logError(std::string(kNAME) + ": residual must be float32, float16 or bfloat16, got "
                + dataTypeName(inputTypes[0]));
            return -1;
        }
        for (int32_t i = 0; i < kNB_OUT; ++i)
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
            || !v41RanksOk(kNAME, inputs, {3, 2, 1, 1}, "residual [T,n,d], hc_fn [M,K], hc_scale [3], hc_base [M]")
            || !v41WeightsOk(kNAME, inputs[0], inputs[1]))
        {
            return -1;
        }
        v41SetDims(outputs[0], inputs[0], "Tn");
        v41SetDims(outputs[1], inputs[0], "Tn");
        v41SetDims(outputs[2], inputs[0], "Tnn");
        return 0;
    }

    bool supportsFormat(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut) const noexcept override
    {
        return v41FormatOk(pos, inOut, 0, {});
    }

    size_t workspaceSize(int64_t t, int32_t n, int32_t d, mhcDtype_t dtype) const noexcept override
    {
        return mhcMixWorkspaceSize(t, n, d, dtype);
    }

    int32_t launch(KernelCall const& c) noexcept override
    {
        auto f = [&](int32_t i) { return static_cast<float const*>(c.inputs[i]); };
        auto o = [&](int32_t i) { return static_cast<float*>(c.outputs[i]); };
        mhcStatus_t const st = mhcMix(c.inputs[0], f(1), f(2), f(3), o(0), o(1), o(2), c.t, c.n, c.d, c.dtype, &mParams,
            c.workspace, workspaceSize(c.t, c.n, c.d, c.dtype), c.stream);
        return st == MHC_STATUS_SUCCESS ? 0 : reportKernelFailure(kNAME, "mhcMix", st);
    }

private:
    int32_t checkStatic(nvinfer1::PluginTensorDesc const& res) const noexcept override
    {
        return checkResidualShape(kNAME, res);
    }

    mhcPreParams mParams{};
};
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcMixCreator() noexcept
{
    static MhcCreator<MhcMixPlugin> creator(kNAME, v41MixFields());
    return &creator;
}

} // namespace plugin
} // namespace mhc
