// MhcPostHead: the last boundary, MhcPost then MhcHead on the new residual
// (contract: shared/spec/mhc_ops.md). Kernel call, plugin and creator.
#include "mhcBoundary.h"

#include <string>

namespace mhc
{
namespace plugin
{
namespace
{
char const* const kNAME = "MhcPostHead";

std::vector<FieldSpec> const kFIELDS = {
    {"rms_eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
    {"eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
};

// Output: y [T,d].
constexpr int32_t kNB_OUT = 1;

class MhcPostHeadPlugin final : public MhcPlugin<MhcPostHeadPlugin, kBNB_IN, kNB_OUT, kBRESIDUAL>
{
public:
    explicit MhcPostHeadPlugin(Fields const& fields)
        : MhcPlugin(kNAME, fields)
    {
        mParams.rms_eps = fields.getFloat("rms_eps");
        mParams.eps = fields.getFloat("eps");
    }

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kBNB_IN, kNB_OUT) || !boundaryTypesOk(kNAME, inputTypes))
        {
            return -1;
        }
        outputTypes[0] = inputTypes[kBX];
        return 0;
    }

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kBNB_IN, kNB_OUT) || !boundaryShapesOk(kNAME, inputs, false))
        {
            return -1;
        }
        outputs[0] = inputs[kBX];
        return 0;
    }

    bool supportsFormat(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut) const noexcept override
    {
        return boundaryFormatOk(pos, inOut, {kBNB_IN}); // y
    }

    size_t workspaceSize(int64_t t, int32_t n, int32_t d, mhcDtype_t dtype) const noexcept override
    {
        return mhcPostHeadWorkspaceSize(t, n, d, dtype);
    }

    int32_t launch(KernelCall const& c) noexcept override
    {
        auto f = [&](int32_t i) { return static_cast<float const*>(c.inputs[i]); };
        mhcStatus_t const st = mhcPostHead(c.inputs[0], c.inputs[1], f(2), f(3), f(4), f(5), f(6), c.outputs[0], c.t,
            c.n, c.d, c.dtype, &mParams, c.workspace, workspaceSize(c.t, c.n, c.d, c.dtype), c.stream);
        return st == MHC_STATUS_SUCCESS ? 0 : reportKernelFailure(kNAME, "mhcPostHead", st);
    }

private:
    int32_t checkStatic(nvinfer1::PluginTensorDesc const& res) const noexcept override
    {
        return checkResidualShape(kNAME, res);
    }

    mhcHeadParams mParams{};
};
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcPostHeadCreator() noexcept
{
    static MhcCreator<MhcPostHeadPlugin> creator(kNAME, kFIELDS);
    return &creator;
}

} // namespace plugin
} // namespace mhc
